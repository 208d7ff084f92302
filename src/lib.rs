//! FluxLit: one public origin for a FastAPI backend and a Streamlit UI, with the
//! security edge in front of both.
//!
//! The pipeline, in one line (`ARCHITECTURE.md` is the map: what each stage may import,
//! and where a new feature goes):
//!
//! ```text
//! fluxlit.toml ─▶ config ─▶ compile ─▶ build ─▶ snapshot ─ArcSwap─▶ serve
//!                 checked    Plan      runtime   one load()         listeners, request
//!                 Config               parts     per request        path, admin, login
//! reload: watch (notify, SIGHUP, poll) ─ the same steps ─ one store ─ Snapshot::start
//! ```
//!
//! A request loads the snapshot once and uses only it; a reload is one atomic store, and
//! a config that is refused has started nothing.

pub mod access_log;
pub mod auth;
pub mod build;
pub mod compile;
pub mod config;
pub mod doctor;
pub mod gateway;
pub mod header_sets;
pub mod http;
pub mod http1;
pub mod idle;
pub mod logging;
pub mod metrics;
pub mod peer;
pub mod proxy;
pub mod rate_limit;
pub mod reload;
pub mod serve;
pub mod shutdown;
pub mod snapshot;
pub mod tls;

pub use gateway::Gateway;
