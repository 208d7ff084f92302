//! Wiring: the first snapshot, the listeners, the reload watcher, and shutdown.
//!
//! Shutdown has two steps. Draining: `/readyz` answers 503, the public listener
//! closes, keep-alive connections are told to close after their request, WebSockets
//! get a 1001 close frame, and requests in flight get until `server.shutdown_grace`.
//! Stopping: the admin listener and the watcher end, and whatever is left is cut.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::auth::secrets::{Environment, ProcessEnvironment};
use crate::compile::CompileContext;
use crate::metrics::Metrics;
use crate::proxy::websocket::Tunnels;
use crate::reload::{Reloader, StartupConfigError, initial_snapshot};
use crate::serve::{admin, listener};
use crate::shutdown;
use crate::snapshot::{SharedSnapshot, Snapshot};

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    /// The public listener's bound address (useful with port 0).
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    snapshot: SharedSnapshot,
    reloader: Arc<Reloader>,
    /// Set when the shutdown starts; `/readyz` reads it.
    draining: Arc<AtomicBool>,
    /// Closes the public listener and its connections and tunnels.
    drain: shutdown::Signal,
    /// Stops the admin listener and the watcher, after the drain.
    stop: shutdown::Signal,
    server: JoinHandle<()>,
    /// Requests in flight on the public listener.
    requests: Arc<AtomicUsize>,
    tunnels: Tunnels,
    tasks: Vec<JoinHandle<()>>,
}

/// What a shutdown left unfinished when its grace period ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    pub grace: Duration,
    pub requests_cut: usize,
    pub websockets_cut: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] StartupConfigError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl Gateway {
    /// Loads the config at `config_path`, binds the listeners and starts serving and
    /// watching the file. Secrets named `{ env = ... }` come from the process environment.
    pub async fn start(config_path: PathBuf) -> Result<Self, StartError> {
        Self::start_with_environment(config_path, Arc::new(ProcessEnvironment)).await
    }

    /// [`Gateway::start`], with environment variables from `env`.
    pub async fn start_with_environment(
        config_path: PathBuf,
        env: Arc<dyn Environment>,
    ) -> Result<Self, StartError> {
        let compile_context = CompileContext::for_config(&config_path, env);
        let first = initial_snapshot(&config_path, &compile_context)?;
        let listen = first.config.server.listen;
        let admin_listen = first.config.admin.as_ref().map(|admin| admin.listen);
        tracing::info!(
            generation = first.generation,
            hash = %first.source_hash.short(),
            routes = first.routes.len(),
            "config loaded from {}",
            config_path.display(),
        );

        let metrics = Arc::new(Metrics::new());
        metrics.serving(first.generation, first.loaded_at);
        let snapshot: SharedSnapshot = Arc::new(ArcSwap::from_pointee(first));
        snapshot.load().start();
        let reloader = Arc::new(Reloader::new(
            config_path,
            Arc::clone(&snapshot),
            compile_context,
            Arc::clone(&metrics),
        ));
        let drain = shutdown::Signal::new();
        let stop = shutdown::Signal::new();
        let draining = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let tunnels = Tunnels::new(drain.clone());

        let listener = bind("public listener", listen).await?;
        let addr = local_addr(&listener, listen);
        let server = tokio::spawn(listener::serve(
            listener,
            Arc::clone(&snapshot),
            Arc::clone(&metrics),
            drain.clone(),
            tunnels.clone(),
            Arc::clone(&requests),
        ));
        let mut tasks = Vec::new();

        let mut admin_addr = None;
        if let Some(admin_listen) = admin_listen {
            let listener = bind("admin listener", admin_listen).await?;
            admin_addr = Some(local_addr(&listener, admin_listen));
            tasks.push(tokio::spawn(admin::serve(
                listener,
                Arc::clone(&snapshot),
                Arc::clone(&reloader),
                Arc::clone(&metrics),
                Arc::clone(&draining),
                stop.clone(),
            )));
        }
        tasks.push(tokio::spawn(Arc::clone(&reloader).watch(stop.clone())));
        tracing::info!(%addr, admin = ?admin_addr, "fluxlit is serving");
        Ok(Self {
            addr,
            admin_addr,
            snapshot,
            reloader,
            draining,
            drain,
            stop,
            server,
            requests,
            tunnels,
            tasks,
        })
    }

    /// The snapshot serving right now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub fn reloader(&self) -> &Arc<Reloader> {
        &self.reloader
    }

    /// Drains, waiting at most `server.shutdown_grace` (read now, from the running
    /// snapshot), then stops. Returns what was still running when the grace ended.
    pub async fn shutdown(self) -> ShutdownReport {
        let grace = self.snapshot.load().config.server.shutdown_grace.get();
        self.draining.store(true, Ordering::Release);
        self.drain.fire();
        let deadline = tokio::time::Instant::now() + grace;

        let mut server = self.server;
        let drained = tokio::time::timeout_at(deadline, async {
            let _ = (&mut server).await;
            self.tunnels.all_closed().await;
        })
        .await
        .is_ok();
        let report = ShutdownReport {
            grace,
            requests_cut: if drained {
                0
            } else {
                self.requests.load(Ordering::Acquire)
            },
            websockets_cut: if drained { 0 } else { self.tunnels.open() },
        };
        if drained {
            tracing::info!("shutdown: every request and WebSocket finished");
        } else {
            tracing::warn!(
                requests_cut = report.requests_cut,
                websockets_cut = report.websockets_cut,
                "shutdown: the grace period of {} ended; cutting {} request(s) and {} WebSocket(s)",
                humantime::format_duration(grace),
                report.requests_cut,
                report.websockets_cut,
            );
            server.abort();
        }
        self.stop.fire();
        for task in self.tasks {
            let _ = task.await;
        }
        report
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

fn local_addr(listener: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(fallback)
}
