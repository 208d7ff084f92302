//! Wiring: the first snapshot, the listeners, the reload watcher, and shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::secrets::{Environment, ProcessEnvironment};
use crate::config::compile::CompileContext;
use crate::metrics::Metrics;
use crate::reload::{Reloader, StartupConfigError, initial_snapshot};
use crate::snapshot::{SharedSnapshot, Snapshot};
use crate::{admin, server};

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    /// The public listener's bound address (useful with port 0).
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    snapshot: SharedSnapshot,
    reloader: Arc<Reloader>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
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
        let reloader = Arc::new(Reloader::new(
            config_path,
            Arc::clone(&snapshot),
            compile_context,
            Arc::clone(&metrics),
        ));
        let (shutdown, shutdown_rx) = watch::channel(false);

        let listener = bind("public listener", listen).await?;
        let addr = local_addr(&listener, listen);
        let mut tasks = vec![tokio::spawn(server::serve(
            listener,
            Arc::clone(&snapshot),
            Arc::clone(&metrics),
            shutdown_rx.clone(),
        ))];

        let mut admin_addr = None;
        if let Some(admin_listen) = admin_listen {
            let listener = bind("admin listener", admin_listen).await?;
            admin_addr = Some(local_addr(&listener, admin_listen));
            tasks.push(tokio::spawn(admin::serve(
                listener,
                Arc::clone(&snapshot),
                Arc::clone(&reloader),
                Arc::clone(&metrics),
                shutdown_rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(Arc::clone(&reloader).watch(shutdown_rx)));
        tracing::info!(%addr, admin = ?admin_addr, "fluxlit is serving");
        Ok(Self {
            addr,
            admin_addr,
            snapshot,
            reloader,
            shutdown,
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

    /// Stops accepting, lets open connections finish their current request, and stops
    /// the watcher.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
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

/// Resolves once shutdown has been asked for (or the gateway is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
