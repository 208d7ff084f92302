//! The `fluxlit` command line. Only wiring lives here; the gateway is the library.

use std::io::Write;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fluxlit::config::{self, LoadError};
use fluxlit::{Gateway, reload::StartupConfigError};

/// A request allocates a dozen short-lived blocks (read buffers, header maps, the
/// service future); glibc's allocator spends about twice mimalloc's instructions on them
/// (BENCHMARKS.md, "mimalloc and the hyper floor").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

    /// Log filter, e.g. "info" or "fluxlit=debug" [default: $RUST_LOG, else `[log] level`]
    #[arg(long, global = true)]
    log: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway; reloads on file change and SIGHUP.
    Serve {
        /// Worker threads of the runtime [default: one per core]. With one, a
        /// single-threaded scheduler.
        #[arg(long)]
        workers: Option<NonZeroUsize>,
    },
    /// Check the config as `serve` would load it (secrets and files it names read,
    /// nothing reached over the network): exit 0, or print every error with
    /// line:column and exit 1.
    Validate,
    /// Print the effective config (defaults filled in), then its warnings and the
    /// doctor's static findings.
    Config,
    /// Operational checks: unsafe settings, secrets, reachability and clocks.
    #[command(after_help = DOCTOR_EXIT_CODES)]
    Doctor {
        /// Exit 2 when there are warnings (errors always exit 1).
        #[arg(long)]
        strict: bool,
        /// Skip the network: no connections to upstreams, identity providers or Redis.
        #[arg(long)]
        offline: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = DoctorFormat::Text)]
        format: DoctorFormat,
    },
    /// Print the JSON Schema of fluxlit.toml.
    Schema,
    /// What a reload to --config would change, compared with another file or a running
    /// gateway. Exit 0: no changes; 3: changes; 1: an error (an invalid file is reported
    /// like `validate` does).
    Diff(DiffArgs),
    /// Development tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

const DOCTOR_EXIT_CODES: &str = "Exit codes:\n  0  no errors (and, with --strict, no warnings)\n  \
1  errors, or the config does not load\n  2  warnings, with --strict\n  \
64 a usage error (an unknown flag, a missing value)";

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DoctorFormat {
    /// Findings grouped by severity, each with its fix, and a summary line.
    Text,
    /// One JSON document: {"findings": [...], "summary": {...}}, also when the config
    /// does not load (findings with the id config_invalid).
    Json,
}

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct DiffArgs {
    /// The config to compare with, e.g. the one deployed now.
    #[arg(long, value_name = "OLD")]
    against: Option<PathBuf>,
    /// A running gateway's admin listener (`http://127.0.0.1:9901`): compare with the
    /// config it serves.
    #[arg(long, value_name = "URL")]
    admin: Option<String>,
}

/// `fluxlit diff`'s exit code when it found changes, so CI can tell them from errors.
const DIFF_FOUND_CHANGES: u8 = 3;

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

/// The exit code of a command line that does not parse (a misspelt flag, a missing
/// argument): `EX_USAGE` of sysexits.h, a code no command uses for what it found, so a
/// CI job never reads a typo as `doctor --strict` warnings (2) or `diff` changes (3).
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // `--help` and `--version` are answers, not mistakes.
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let path = config::resolve_path(cli.config.clone(), std::env::var_os("FLUXLIT_CONFIG"));
    let result = match cli.command {
        Command::Serve { workers } => serve(&path, workers, cli.log.as_deref()),
        Command::Validate => Ok(validate(&path)),
        Command::Config => Ok(show_config(&path)),
        Command::Doctor {
            strict,
            offline,
            format,
        } => doctor(&path, fluxlit::doctor::Options { offline, strict }, format),
        Command::Diff(args) => diff(&path, &args),
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

/// Loads and compiles the file as `serve` would (secrets, key files and certificates
/// read; nothing started, nothing reached over the network).
fn validate(path: &Path) -> ExitCode {
    let checked = match config::load(path) {
        Ok(checked) => checked,
        Err(error) => {
            report(&error);
            return ExitCode::FAILURE;
        }
    };
    let (routes, upstreams) = (checked.config.routes.len(), checked.config.upstreams.len());
    let warnings = checked.warnings.clone();
    let ctx = fluxlit::compile::CompileContext::for_config(
        path,
        std::sync::Arc::new(fluxlit::auth::secrets::ProcessEnvironment),
    );
    match fluxlit::compile::compile(checked, &ctx) {
        Ok(plan) => {
            for warning in &plan.warnings {
                eprintln!("{}", warning.render(path));
            }
            println!(
                "{}: ok ({routes} route(s), {upstreams} upstream(s), {} warning(s))",
                path.display(),
                plan.warnings.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            report(&LoadError::Invalid {
                path: path.to_owned(),
                errors,
                warnings,
            });
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
                for finding in fluxlit::doctor::static_findings(&checked) {
                    eprintln!("{}", finding.render(path));
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

fn doctor(
    path: &Path,
    options: fluxlit::doctor::Options,
    format: DoctorFormat,
) -> anyhow::Result<ExitCode> {
    let checked = match config::load(path) {
        Ok(checked) => checked,
        Err(error) => {
            report(&error);
            if let DoctorFormat::Json = format {
                let report = fluxlit::doctor::Report::config_invalid(&error, options.strict);
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).context("cannot print the report")?
                );
            }
            return Ok(ExitCode::from(fluxlit::doctor::exit::ERRORS));
        }
    };
    let ctx = fluxlit::compile::CompileContext::for_config(
        path,
        std::sync::Arc::new(fluxlit::auth::secrets::ProcessEnvironment),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(fluxlit::doctor::run(&checked, &ctx, options));
    match format {
        DoctorFormat::Text => print!("{}", report.render_text(path)),
        DoctorFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).context("cannot print the report")?
        ),
    }
    Ok(ExitCode::from(report.summary.exit_code))
}

fn diff(path: &Path, args: &DiffArgs) -> anyhow::Result<ExitCode> {
    let new = match config::load(path) {
        Ok(checked) => checked.config,
        Err(error) => {
            report(&error);
            return Ok(ExitCode::FAILURE);
        }
    };
    let old = match (&args.against, &args.admin) {
        (Some(old_path), _) => match config::load(old_path) {
            Ok(checked) => checked.config,
            Err(error) => {
                report(&error);
                return Ok(ExitCode::FAILURE);
            }
        },
        (None, Some(admin)) => running_config(admin)?,
        (None, None) => anyhow::bail!("give --against OLD or --admin URL"),
    };
    let changes = config::diff::ConfigDiff::between(&old, &new);
    println!("{changes}");
    Ok(if changes.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(DIFF_FOUND_CHANGES)
    })
}

/// The effective config a running gateway serves, from its admin listener's `/config`.
fn running_config(admin: &str) -> anyhow::Result<config::Config> {
    let base = if admin.contains("://") {
        admin.trim_end_matches('/').to_owned()
    } else {
        format!("http://{}", admin.trim_end_matches('/'))
    };
    let url = format!("{base}/config");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let text = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("cannot build an HTTP client")?;
        let response = client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("cannot reach the admin listener at {url}"))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .with_context(|| format!("cannot read the answer of {url}"))?;
        if !status.is_success() {
            anyhow::bail!("{url} answered {status}: {}", body.trim());
        }
        Ok(body)
    })?;
    serde_json::from_str(&text).with_context(|| format!("{url} did not answer with a config"))
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
    let reference = provider
        .hs256_secret
        .as_ref()
        .context("the provider has no hs256_secret")?;
    let ctx = fluxlit::compile::CompileContext::for_config(
        path,
        std::sync::Arc::new(secrets::ProcessEnvironment),
    );
    let key = format!("auth.providers.{provider_name}.hs256_secret");
    let secret = secrets::resolve(reference, &ctx.config_dir, ctx.env.as_ref())
        .map_err(|message| anyhow::anyhow!("{key}: {message}"))?;
    // The gateway refuses this secret: a token signed with it would be accepted nowhere.
    if let Some(min) = secrets::MinLength::hmac(&provider.algorithms)
        && let Err(short) = min.check(reference, &secret)
    {
        anyhow::bail!("{key}: {short} [{}]; {}", secrets::TOO_SHORT, min.fix());
    }
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

fn serve(
    path: &Path,
    workers: Option<NonZeroUsize>,
    log: Option<&str>,
) -> anyhow::Result<ExitCode> {
    // `[log]` is read before the gateway starts, so that its own messages are formatted
    // as asked; a file that does not load is reported by the start below.
    let log_settings = config::load(path)
        .map(|checked| checked.config.log)
        .unwrap_or_default();
    let level_override = log
        .map(str::to_owned)
        .or_else(|| std::env::var("RUST_LOG").ok());
    if let Some(warning) = fluxlit::logging::init(&log_settings, level_override.as_deref()) {
        eprintln!("fluxlit: {warning}");
    }
    let config_dir = fluxlit::compile::CompileContext::for_config(
        path,
        std::sync::Arc::new(fluxlit::auth::secrets::ProcessEnvironment),
    )
    .config_dir;
    let access_log = match fluxlit::logging::start_access_log(&log_settings, &config_dir) {
        Ok(access_log) => access_log.map(std::sync::Arc::new),
        Err(error) => {
            if let fluxlit::access_log::InstallError::Open { .. } = error {
                anyhow::bail!(
                    "cannot start the access log: log.access_log_path: {error}; create the \
                     directory, or name a file the gateway may write"
                );
            }
            anyhow::bail!("cannot start the access log: {error}");
        }
    };
    // One worker gets the single-threaded scheduler. It runs woken tasks in the order
    // they woke, where the multi-threaded one runs a task woken by the running task
    // next: the writes of one turn of the event loop go out together, and the peers are
    // woken less often (BENCHMARKS.md, "Scheduling on one core").
    let single = match workers {
        Some(workers) => workers.get() == 1,
        None => std::thread::available_parallelism().is_ok_and(|cores| cores.get() == 1),
    };
    let mut runtime = if single {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    runtime.enable_all();
    if let Some(workers) = workers.filter(|_| !single) {
        runtime.worker_threads(workers.get());
    }
    let runtime = runtime.build().context("cannot start the async runtime")?;
    let exit = runtime.block_on(async {
        // Before anything else, and not in the task (which runs later): SIGUSR1's
        // default action ends the process.
        match listen_for_access_log_signals() {
            Ok(signals) => {
                tokio::spawn(access_log_signals(signals, access_log.clone()));
            }
            Err(error) => tracing::warn!(
                %error,
                "cannot listen for SIGUSR1 and SIGHUP: the access log is not reopened on SIGUSR1"
            ),
        }
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
    // Every request is finished or dropped now, its line recorded: write them all.
    if let Some(access_log) = access_log {
        match std::sync::Arc::try_unwrap(access_log) {
            Ok(access_log) => access_log.close(),
            Err(access_log) => access_log.flush(),
        }
    }
    exit
}

/// SIGUSR1 and SIGHUP, listened for.
type AccessLogSignals = (tokio::signal::unix::Signal, tokio::signal::unix::Signal);

fn listen_for_access_log_signals() -> std::io::Result<AccessLogSignals> {
    use tokio::signal::unix::{SignalKind, signal};
    Ok((
        signal(SignalKind::user_defined1())?,
        signal(SignalKind::hangup())?,
    ))
}

/// SIGUSR1 reopens the access log's file (a rotation renamed it); SIGHUP, which also
/// reloads the config, writes out what its buffers hold. Without an access log both are
/// still taken, so that a rotation's SIGUSR1 never ends the process.
async fn access_log_signals(
    (mut reopen, mut hangup): AccessLogSignals,
    access_log: Option<std::sync::Arc<fluxlit::access_log::AccessLog>>,
) {
    loop {
        tokio::select! {
            Some(()) = reopen.recv() => {
                if let Some(access_log) = &access_log {
                    access_log.reopen();
                }
            }
            Some(()) = hangup.recv() => {
                if let Some(access_log) = &access_log {
                    access_log.write_now();
                }
            }
            else => return,
        }
    }
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
