//! Stage 5: what answers on the sockets — the public listener, the request path, the
//! gateway's own endpoints.

pub mod forward;
pub mod listener;

pub use forward::Proxy;
