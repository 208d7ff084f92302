//! The `fluxlit` binary as a user runs it: one-off commands (`validate`, `config`,
//! `doctor`, `diff`, `token issue`) and `fluxlit serve` processes of a test's own.
//! Nothing is taken from the test process's environment by accident: `FLUXLIT_CONFIG`
//! is always removed, and a test adds the variables it means.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::{HANG_GUARD, Reachable};

/// `fluxlit` run in `dir`, without `FLUXLIT_CONFIG`.
pub fn command(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fluxlit"));
    command.current_dir(dir).env_remove("FLUXLIT_CONFIG");
    command
}

/// Runs `fluxlit <args>` in `dir` with `env` added to its environment.
pub fn run(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Output {
    command(dir)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run fluxlit")
}

/// Runs `fluxlit <args>` in a fresh directory holding `config` as `fluxlit.toml`.
pub fn run_on(config: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("fluxlit.toml"), config).expect("write config");
    run(args, dir.path(), env)
}

/// Runs `fluxlit <args>` in `dir` with `env` added, as [`run`] does, for a command that
/// should exit by itself (a `serve` that refuses its config): one still running after
/// [`HANG_GUARD`] is killed and the test fails instead of hanging.
pub fn run_to_exit(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Output {
    let child = command(dir)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fluxlit");
    let (done, finished) = std::sync::mpsc::channel();
    let id = child.id();
    let waiter = std::thread::spawn(move || {
        let output = child.wait_with_output();
        let _ = done.send(());
        output
    });
    if finished.recv_timeout(HANG_GUARD).is_err() {
        let _ = Command::new("kill")
            .args(["-KILL", &id.to_string()])
            .status();
        let output = waiter
            .join()
            .expect("the waiter ends")
            .expect("fluxlit output");
        panic!(
            "fluxlit {args:?} was still running after {HANG_GUARD:?}; stderr:\n{}",
            stderr(&output)
        );
    }
    waiter
        .join()
        .expect("the waiter ends")
        .expect("fluxlit output")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Stdout as JSON; a failure shows both streams.
pub fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "stdout is not JSON ({error}):\n{}\nstderr:\n{}",
            stdout(output),
            stderr(output)
        )
    })
}

/// `fluxlit serve --config <config>` with at most `nofile` open file descriptors (the
/// shell's `ulimit -n`), `RUST_LOG` at `warn`, its stderr written to `log`: a gateway
/// that runs out of descriptors as a small container would. Killed when dropped.
pub fn serve_with_nofile(config: &Path, nofile: u32, log: &Path) -> KillOnDrop {
    serve_binary_with_nofile(
        Path::new(env!("CARGO_BIN_EXE_fluxlit")),
        config,
        nofile,
        log,
    )
}

/// [`serve_with_nofile`] with the `fluxlit` binary at `binary`.
pub fn serve_binary_with_nofile(
    binary: &Path,
    config: &Path,
    nofile: u32,
    log: &Path,
) -> KillOnDrop {
    let child = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -n {nofile}; exec {} serve --config {}",
            binary.display(),
            config.display()
        ))
        .env("RUST_LOG", "warn")
        .env_remove("FLUXLIT_CONFIG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("spawn fluxlit serve");
    KillOnDrop(child)
}

/// A child process, killed when dropped however the test ends.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Everything a process wrote to one of its pipes (stdout or stderr), line by line,
/// collected by a thread (so the process never blocks on a full pipe).
#[derive(Debug, Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    /// Starts collecting from `pipe`; the thread ends with the pipe.
    fn collect(pipe: impl std::io::Read + Send + 'static) -> (Self, std::thread::JoinHandle<()>) {
        let stderr = Self::default();
        let lines = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                lines.0.lock().unwrap().push(line);
            }
        });
        (stderr, reader)
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// Waits for a line satisfying `found`, and returns it.
    pub async fn wait_for(&self, what: &str, found: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + HANG_GUARD;
        loop {
            if let Some(line) = self.lines().into_iter().find(|line| found(line)) {
                return line;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never logged: {what}\nstderr:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A `fluxlit serve` process of the test's own (the real binary), killed when dropped.
/// It runs with `RUST_LOG` unset, so the config's (or the flags') log settings apply.
#[derive(Debug)]
pub struct Serve {
    process: KillOnDrop,
    /// The public listener, as the serving line names it.
    pub addr: SocketAddr,
    /// The access log, unless the config sends it to a file.
    pub stdout: Lines,
    /// The gateway's own log.
    pub stderr: Lines,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Serve {
    /// Starts `fluxlit serve <args>` in `dir` and waits until it says where it serves.
    pub async fn start(dir: &Path, args: &[&str]) -> Self {
        let mut child = command(dir)
            .arg("serve")
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("fluxlit serve starts");
        let (stdout, stdout_reader) = Lines::collect(child.stdout.take().expect("stdout is piped"));
        let (stderr, stderr_reader) = Lines::collect(child.stderr.take().expect("stderr is piped"));
        let process = KillOnDrop(child);
        // "fluxlit: serving http://ADDR (config ...)" names the port.
        const SERVING: &str = "fluxlit: serving http://";
        let serving = stderr
            .wait_for("the serving line", |line| line.starts_with(SERVING))
            .await;
        let addr = serving
            .trim_start_matches(SERVING)
            .split_whitespace()
            .next()
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in {serving:?}"));
        Self {
            process,
            addr,
            stdout,
            stderr,
            readers: vec![stdout_reader, stderr_reader],
        }
    }

    /// Sends SIGTERM, as an orchestrator stopping the process does.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends the signal `name` (`TERM`, `HUP`, `USR1`...), as `kill -NAME` does.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.process.0.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits until the process exits (hang guard: [`HANG_GUARD`]); all it wrote to stdout
    /// and stderr is in [`Serve::stdout`] and [`Serve::stderr`] then.
    pub async fn wait_for_exit(&mut self) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + HANG_GUARD;
        loop {
            if let Some(status) = self.process.0.try_wait().expect("try_wait") {
                for reader in self.readers.drain(..) {
                    reader.join().expect("a pipe's reader ends with the pipe");
                }
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the gateway did not exit"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Reachable for Serve {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}
