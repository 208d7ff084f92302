//! Stage 5: what answers on the sockets — the public listener and its request path, the
//! admin listener, the gateway's own login endpoints.

pub mod accept;
pub mod admin;
pub mod forward;
pub mod listener;
pub mod login;
pub mod status_page;
mod stream_watch;

pub use forward::Proxy;
