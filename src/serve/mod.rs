//! Stage 5: what answers on the sockets — the listeners, the request path, the gateway's own endpoints.

pub mod admin;
pub mod login;
