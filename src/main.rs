//! The `fluxlit` command line. Only wiring lives here; the gateway is the library.

#![warn(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fluxlit::config::{self, LoadError};
use fluxlit::{Gateway, reload::StartupConfigError};

#[derive(Debug, Parser)]
#[command(
    name = "fluxlit",
    version,
    about = "One origin for FastAPI + Streamlit, with the security edge in front"
)]
struct Cli {
    /// Config file [default: $FLUXLIT_CONFIG, else ./fluxlit.toml]
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,

    /// Log filter, e.g. "info" or "fluxlit=debug" [default: $RUST_LOG, else info]
    #[arg(long, global = true)]
    log: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway; reloads on file change and SIGHUP.
    Serve {
        /// Worker threads of the runtime [default: one per core].
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Check the config: exit 0, or print every error with line:column and exit 1.
    Validate,
    /// Print the effective config (defaults filled in), then its warnings.
    Config,
    /// Print the JSON Schema of fluxlit.toml.
    Schema,
    /// Development tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Mint a token with a jwt provider's HS secret, issuer and audience.
    Issue {
        /// The provider in [auth.providers].
        #[arg(long)]
        provider: String,
        /// The token's subject (`sub`).
        #[arg(long)]
        sub: String,
        /// How long the token is valid, e.g. 15m.
        #[arg(long, default_value = "15m")]
        ttl: fluxlit::config::units::Duration,
        /// Extra claims as key=value, e.g. --claim scope="read write". Repeatable.
        #[arg(long = "claim", value_parser = parse_claim)]
        claims: Vec<(String, String)>,
    },
}

fn parse_claim(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not key=value")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = config::resolve_path(cli.config.clone(), std::env::var_os("FLUXLIT_CONFIG"));
    let result = match cli.command {
        Command::Serve { workers } => serve(&path, workers, cli.log.as_deref()),
        Command::Validate => Ok(validate(&path)),
        Command::Config => Ok(show_config(&path)),
        Command::Schema => {
            print!("{}", config::schema::to_pretty_json());
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            command:
                TokenCommand::Issue {
                    provider,
                    sub,
                    ttl,
                    claims,
                },
        } => {
            let request = fluxlit::auth::token::TokenRequest {
                sub,
                ttl: ttl.get(),
                claims,
            };
            issue_token(&path, &provider, &request)
        }
    };
    result.unwrap_or_else(|error| {
        eprintln!("fluxlit: {error:#}");
        ExitCode::FAILURE
    })
}

fn validate(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(checked) => {
            for warning in &checked.warnings {
                eprintln!("{}", warning.render(path));
            }
            println!(
                "{}: ok ({} route(s), {} upstream(s), {} warning(s))",
                path.display(),
                checked.config.routes.len(),
                checked.config.upstreams.len(),
                checked.warnings.len()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            report(&error);
            ExitCode::FAILURE
        }
    }
}

fn show_config(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(checked) => match toml::to_string_pretty(&checked.config) {
            Ok(text) => {
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(stdout, "# effective config of {}\n{text}", path.display());
                for warning in &checked.warnings {
                    eprintln!("{}", warning.render(path));
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("fluxlit: cannot print the config: {error}");
                ExitCode::FAILURE
            }
        },
        Err(error) => {
            report(&error);
            ExitCode::FAILURE
        }
    }
}

fn issue_token(
    path: &Path,
    provider_name: &str,
    request: &fluxlit::auth::token::TokenRequest,
) -> anyhow::Result<ExitCode> {
    use fluxlit::auth::{secrets, token};
    let checked = match config::load(path) {
        Ok(checked) => checked,
        Err(error) => {
            report(&error);
            return Ok(ExitCode::FAILURE);
        }
    };
    let providers = &checked.config.auth.providers;
    let Some(provider) = providers.get(provider_name) else {
        let known: Vec<&str> = providers.keys().map(String::as_str).collect();
        anyhow::bail!(
            "no provider {provider_name:?} in {}; the providers are: {}",
            path.display(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        );
    };
    token::minting_algorithm(provider_name, provider).map_err(anyhow::Error::msg)?;
    let secret = provider
        .hs256_secret
        .as_ref()
        .context("the provider has no hs256_secret")?;
    let ctx = config::compile::CompileContext::for_config(
        path,
        std::sync::Arc::new(secrets::ProcessEnvironment),
    );
    let secret =
        secrets::resolve(secret, &ctx.config_dir, ctx.env.as_ref()).map_err(|message| {
            anyhow::anyhow!("auth.providers.{provider_name}.hs256_secret: {message}")
        })?;
    let token =
        token::mint(provider_name, provider, &secret, request).map_err(anyhow::Error::msg)?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

fn report(error: &LoadError) {
    for line in error.render() {
        eprintln!("{line}");
    }
    if let LoadError::Invalid { path, errors, .. } = error {
        eprintln!(
            "{}: {} error(s); nothing was applied",
            path.display(),
            errors.len()
        );
    }
}

fn serve(path: &Path, workers: Option<usize>, log: Option<&str>) -> anyhow::Result<ExitCode> {
    init_logging(log);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(workers) = workers {
        runtime.worker_threads(workers.max(1));
    }
    let runtime = runtime.build().context("cannot start the async runtime")?;
    let exit = runtime.block_on(async {
        let gateway = match Gateway::start(path.to_owned()).await {
            Ok(gateway) => gateway,
            Err(fluxlit::gateway::StartError::Config(StartupConfigError::Load(error))) => {
                report(&error);
                return Ok(ExitCode::FAILURE);
            }
            Err(error) => return Err(error.into()),
        };
        let scheme = if gateway.snapshot().tls.is_some() {
            "https"
        } else {
            "http"
        };
        eprintln!(
            "fluxlit: serving {scheme}://{} (config {})",
            gateway.addr,
            path.display()
        );
        wait_for_stop_signal().await;
        tracing::info!("stopping: finishing requests in flight");
        // The gateway bounds its own wait by `server.shutdown_grace`; a second signal
        // is an operator who does not want to wait.
        tokio::select! {
            _ = gateway.shutdown() => {}
            () = wait_for_stop_signal() => {
                tracing::warn!("second stop signal: exiting without waiting for the rest");
            }
        }
        Ok(ExitCode::SUCCESS)
    });
    // Tasks cut at the end of the grace period must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_secs(1));
    exit
}

async fn wait_for_stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

fn init_logging(filter: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = filter
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}
