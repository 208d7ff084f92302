//! The load tool of `bench/compare.sh` for what wrk and oha do not do: a WebSocket echo
//! upstream, WebSocket echo load, and holding many idle connections open while the
//! memory of a proxy is measured.
//!
//! It is a bench target (`harness = false`) so that it builds with the crate's
//! dependencies and no new ones; it is not a criterion bench. Build and run:
//!
//! ```sh
//! cargo bench --bench loadgen --no-run
//! target/release/deps/loadgen-* ws-echo-server --listen 127.0.0.1:9100
//! ```
//!
//! `cargo bench --bench loadgen` alone (no subcommand) prints the usage and exits 0.
//!
//! Subcommands (each prints one JSON object on stdout when it has a result):
//!
//! - `ws-echo-server --listen ADDR`: echoes every WebSocket message; prints
//!   `{"listening": "ADDR"}` once bound.
//! - `ws-load --url ws://... [--connections 64] [--seconds 10] [--size 64]`: each
//!   connection sends a message and waits for its echo, again and again (a closed loop);
//!   prints messages/s and round-trip percentiles in microseconds.
//! - `get --url http://... [--connections 16] --requests N`: N keep-alive GETs in all,
//!   spread over the connections (each does the next while any are left); prints how
//!   many succeeded and failed. For counts that must not depend on time (instructions
//!   per request under callgrind).
//! - `hold --url http://...|ws://... [--connections 1000] [--seconds 600]`: opens the
//!   connections (one keep-alive GET each, or a WebSocket handshake), prints
//!   `{"ready": N, "failed": M}`, then holds them until stdin closes or the time is up.
//!
//! - `hyper-proxy --listen ADDR --upstream ADDR`: the least a proxy built on hyper can
//!   do, as a floor to measure fluxlit against: each client connection gets its own
//!   keep-alive connection to the upstream and every request is passed on as it came,
//!   with no header policy, no request id, no routing, no timeout and no pool. Runs on
//!   a single-threaded runtime, as `fluxlit serve --workers 1` does; prints
//!   `{"listening": "ADDR"}` once bound.
//!
//! `--threads N` (default 1) sets the runtime's worker threads.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark stops on a failed setup"
)]

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

const USAGE: &str = "usage: loadgen [--threads N] (ws-echo-server --listen ADDR | ws-load --url URL \
[--connections N] [--seconds S] [--size BYTES] | get --url URL [--connections N] --requests N \
| hold --url URL [--connections N] [--seconds S] | hyper-proxy --listen ADDR --upstream ADDR)";

struct Args {
    command: String,
    listen: Option<SocketAddr>,
    upstream: Option<SocketAddr>,
    url: Option<String>,
    connections: usize,
    seconds: f64,
    size: usize,
    requests: usize,
    threads: usize,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        command: String::new(),
        listen: None,
        upstream: None,
        url: None,
        connections: 0,
        seconds: 0.0,
        size: 64,
        requests: 0,
        threads: 1,
    };
    let mut raw = std::env::args().skip(1);
    while let Some(arg) = raw.next() {
        let mut value = |name: &str| raw.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            // `cargo bench` appends `--bench`; it means nothing here.
            "--bench" => {}
            "--listen" => {
                let v = value("--listen")?;
                args.listen = Some(v.parse().map_err(|e| format!("--listen {v}: {e}"))?);
            }
            "--upstream" => {
                let v = value("--upstream")?;
                args.upstream = Some(v.parse().map_err(|e| format!("--upstream {v}: {e}"))?);
            }
            "--url" => args.url = Some(value("--url")?),
            "--connections" => args.connections = number(&value("--connections")?)?,
            "--seconds" => {
                let v = value("--seconds")?;
                args.seconds = v.parse().map_err(|e| format!("--seconds {v}: {e}"))?;
            }
            "--size" => args.size = number(&value("--size")?)?,
            "--requests" => args.requests = number(&value("--requests")?)?,
            "--threads" => args.threads = number(&value("--threads")?)?.max(1),
            command if !command.starts_with('-') && args.command.is_empty() => {
                args.command = command.to_owned();
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok((!args.command.is_empty()).then_some(args))
}

fn number(text: &str) -> Result<usize, String> {
    text.parse().map_err(|e| format!("{text:?}: {e}"))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("loadgen: {error}\n{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = if args.command == "hyper-proxy" {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loadgen: cannot start a runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match args.command.as_str() {
            "ws-echo-server" => {
                let listen = args.listen.ok_or("--listen is required")?;
                ws_echo_server(listen).await
            }
            "ws-load" => {
                let url = args.url.clone().ok_or("--url is required")?;
                let connections = if args.connections == 0 {
                    64
                } else {
                    args.connections
                };
                let seconds = if args.seconds > 0.0 {
                    args.seconds
                } else {
                    10.0
                };
                ws_load(url, connections, seconds, args.size).await
            }
            "get" => {
                let url = args.url.clone().ok_or("--url is required")?;
                if args.requests == 0 {
                    return Err("--requests is required".to_owned());
                }
                let connections = if args.connections == 0 {
                    16
                } else {
                    args.connections
                };
                get(url, connections, args.requests).await
            }
            "hold" => {
                let url = args.url.clone().ok_or("--url is required")?;
                let connections = if args.connections == 0 {
                    1000
                } else {
                    args.connections
                };
                let seconds = if args.seconds > 0.0 {
                    args.seconds
                } else {
                    600.0
                };
                hold(url, connections, seconds).await
            }
            "hyper-proxy" => {
                let listen = args.listen.ok_or("--listen is required")?;
                let upstream = args.upstream.ok_or("--upstream is required")?;
                hyper_proxy(listen, upstream).await
            }
            other => Err(format!("unknown command {other:?}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("loadgen: {error}");
            ExitCode::FAILURE
        }
    }
}

fn print_json(value: &serde_json::Value) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{value}");
    let _ = stdout.flush();
}

/// Binds `listen`, says where on stdout, and hands each accepted connection (Nagle's
/// delay off) to `serve` on a task of its own.
async fn accept_loop<F, Fut>(listen: SocketAddr, serve: F) -> Result<(), String>
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("bind {listen}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    print_json(&serde_json::json!({ "listening": bound.to_string() }));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(stream));
    }
}

async fn ws_echo_server(listen: SocketAddr) -> Result<(), String> {
    accept_loop(listen, |stream| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        while let Some(Ok(message)) = ws.next().await {
            let echo = match message {
                Message::Text(_) | Message::Binary(_) => message,
                Message::Close(_) => break,
                _ => continue,
            };
            if ws.send(echo).await.is_err() {
                break;
            }
        }
    })
    .await
}

async fn hyper_proxy(listen: SocketAddr, upstream: SocketAddr) -> Result<(), String> {
    use hyper::body::Incoming;
    use hyper::client::conn::http1::SendRequest;

    accept_loop(listen, move |client| async move {
        let Ok(stream) = TcpStream::connect(upstream).await else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let Ok((sender, connection)) =
            hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(stream)).await
        else {
            return;
        };
        tokio::spawn(connection);
        // HTTP/1.1 carries one request at a time, so the lock is never contended; it is
        // there because the service must be `Fn`.
        let sender: Arc<std::sync::Mutex<SendRequest<Incoming>>> =
            Arc::new(std::sync::Mutex::new(sender));
        let service = hyper::service::service_fn(move |request| {
            let sender = Arc::clone(&sender);
            async move {
                std::future::poll_fn(|cx| match sender.lock() {
                    Ok(mut sender) => sender.poll_ready(cx),
                    Err(_) => std::task::Poll::Ready(Ok(())),
                })
                .await?;
                let sent = match sender.lock() {
                    Ok(mut sender) => sender.send_request(request),
                    Err(poisoned) => poisoned.into_inner().send_request(request),
                };
                sent.await
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(client), service)
            .await;
    })
    .await
}

async fn ws_connect(url: &str) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, String> {
    let addr = authority(url)?;
    let stream = TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .map_err(|e| format!("handshake {url}: {e}"))?;
    Ok(ws)
}

/// `host:port` of an `http://` or `ws://` URL.
fn authority(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or(format!("{url}: only ws:// and http:// URLs"))?;
    Ok(rest.split('/').next().unwrap_or(rest).to_owned())
}

async fn ws_load(url: String, connections: usize, seconds: f64, size: usize) -> Result<(), String> {
    let payload = Bytes::from(vec![b'x'; size]);
    let mut sockets = Vec::with_capacity(connections);
    for _ in 0..connections {
        sockets.push(ws_connect(&url).await?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for mut ws in sockets {
        let stop = Arc::clone(&stop);
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut rtts_us: Vec<u32> = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                if ws.send(Message::Binary(payload.clone())).await.is_err() {
                    errors += 1;
                    break;
                }
                match ws.next().await {
                    Some(Ok(Message::Binary(echo))) if echo.len() == payload.len() => {
                        let us = sent.elapsed().as_micros();
                        rtts_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                    }
                    _ => {
                        errors += 1;
                        break;
                    }
                }
            }
            let _ = ws.close(None).await;
            (rtts_us, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (rtts, e) = task.await.map_err(|e| e.to_string())?;
        all.extend(rtts);
        errors += e;
    }
    all.sort_unstable();
    let pct = |p: f64| -> u32 {
        if all.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * all.len() as f64).ceil() as usize;
        all[rank.clamp(1, all.len()) - 1]
    };
    print_json(&serde_json::json!({
        "connections": connections,
        "seconds": elapsed,
        "messages": all.len(),
        "errors": errors,
        "messages_per_s": all.len() as f64 / elapsed,
        "p50_us": pct(50.0),
        "p99_us": pct(99.0),
        "p999_us": pct(99.9),
        "max_us": all.last().copied().unwrap_or(0),
    }));
    Ok(())
}

async fn get(url: String, connections: usize, requests: usize) -> Result<(), String> {
    let left = Arc::new(std::sync::atomic::AtomicUsize::new(requests));
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let take = |left: &std::sync::atomic::AtomicUsize| {
        left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    };
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections.min(requests) {
        let (url, left, failed) = (url.clone(), Arc::clone(&left), Arc::clone(&failed));
        tasks.push(tokio::spawn(async move {
            if !take(&left) {
                return Ok(());
            }
            // The connection's first request is the one `open_http` makes.
            let Held::Http(mut sender) = open_http(&url).await? else {
                return Err("not an HTTP connection".to_owned());
            };
            let addr = authority(&url)?;
            let path = url
                .strip_prefix("http://")
                .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
                .unwrap_or("/")
                .to_owned();
            while take(&left) {
                let request = http::Request::get(path.as_str())
                    .header(http::header::HOST, addr.as_str())
                    .body(Empty::<Bytes>::new())
                    .map_err(|e| e.to_string())?;
                let ok = match sender.send_request(request).await {
                    Ok(response) => {
                        let success = response.status().is_success();
                        response.into_body().collect().await.is_ok() && success
                    }
                    Err(_) => false,
                };
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    let failed = failed.load(Ordering::Relaxed);
    print_json(&serde_json::json!({
        "requests": requests,
        "failed": failed,
        "seconds": started.elapsed().as_secs_f64(),
    }));
    Ok(())
}

enum Held {
    Http(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    Ws(Box<tokio_tungstenite::WebSocketStream<TcpStream>>),
}

async fn open_http(url: &str) -> Result<Held, String> {
    let addr = authority(url)?;
    let path = url
        .strip_prefix("http://")
        .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or("/");
    let stream = TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, addr.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("GET {url}: {}", response.status()));
    }
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(Held::Http(sender))
}

async fn hold(url: String, connections: usize, seconds: f64) -> Result<(), String> {
    let websocket = url.starts_with("ws://");
    let mut held = Vec::with_capacity(connections);
    let mut failed = 0usize;
    let mut first_error = None;
    // A few at a time: a burst of 1,000 connects would overflow small accept queues.
    for chunk_start in (0..connections).step_by(50) {
        let chunk = (connections - chunk_start).min(50);
        let opened = futures_util::future::join_all((0..chunk).map(|_| async {
            if websocket {
                ws_connect(&url).await.map(|ws| Held::Ws(Box::new(ws)))
            } else {
                open_http(&url).await
            }
        }))
        .await;
        for result in opened {
            match result {
                Ok(connection) => held.push(connection),
                Err(error) => {
                    failed += 1;
                    first_error.get_or_insert(error);
                }
            }
        }
    }
    print_json(&serde_json::json!({
        "ready": held.len(),
        "failed": failed,
        "first_error": first_error,
    }));
    // Hold until stdin closes (the runner is done measuring) or the time is up.
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut buffer = [0u8; 64];
        while matches!(std::io::Read::read(&mut std::io::stdin(), &mut buffer), Ok(n) if n > 0) {}
    });
    tokio::select! {
        _ = stdin_closed => {}
        () = tokio::time::sleep(Duration::from_secs_f64(seconds)) => {}
    }
    let open = held
        .iter()
        .filter(|c| match c {
            Held::Http(sender) => !sender.is_closed(),
            Held::Ws(_) => true,
        })
        .count();
    print_json(&serde_json::json!({ "still_open": open }));
    for connection in held {
        if let Held::Ws(mut ws) = connection {
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.as_mut().close(None)).await;
        }
    }
    Ok(())
}
