//! The building blocks of forwarding: the route table, the header policy, the upstream
//! connection pool (over TLS to https upstreams), body limits and framing, WebSocket tunnels, request ids.
//!
//! The snapshot holds these, built once per reload; the request handler
//! ([`crate::serve::forward`]) puts them together for each request. Nothing here reads
//! the snapshot.

pub mod body;
pub mod echo;
pub mod errors;
pub mod fairness;
pub mod framing;
pub mod headers;
pub mod health;
pub mod limits;
pub mod pool;
pub mod request_id;
pub mod route;
pub mod routes;
pub mod upstream_tls;
pub mod websocket;
mod ws_frames;

pub use body::ProxyBody;
