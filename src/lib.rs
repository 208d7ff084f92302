//! FluxLit: one public origin for a FastAPI backend and a Streamlit UI, with the
//! security edge in front of both.
//!
//! The pipeline, in one line:
//!
//! ```text
//! fluxlit.toml ─parse─▶ Config ─validate─▶ CheckedConfig ─compile─▶ Snapshot ─ArcSwap─▶ request path
//!   config::load          config::model      config::validate      config::compile    proxy, server
//!        ▲
//!   reload: notify watcher (the file's directory) + SIGHUP + poll ─ debounce ─ the same
//!   steps, swapped in only on success
//! ```
//!
//! A request loads the snapshot once and uses only it; a reload is one atomic store.

#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod auth;
pub mod config;
pub mod doctor;
pub mod gateway;
pub mod header_sets;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod peer;
pub mod proxy;
pub mod reload;
pub mod serve;
pub mod server;
pub mod snapshot;
pub mod tls;

pub use gateway::Gateway;
/// The admin listener, at its old path too.
pub use serve::admin;
