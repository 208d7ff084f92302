//! hyper's HTTP/1.1 server and client as the reference for fluxlit's engine
//! (`fluxlit::http1`): the same bytes through both, and what each makes of them in one
//! comparable form. The engine is read two ways: by its parsers over the whole stream
//! (`scan`, `scan_response`) and by its serving path, its server or client on one end
//! of an in-memory pipe, the way a connection meets the bytes.
//!
//! Shared by `tests/http1_differential.rs` and the `http1_request` and `http1_response`
//! fuzz targets (which include this file by path), so all hold the engine to the same
//! reference.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fluxlit::http1::{self, Ending, HeadLimits};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request as a server saw it: method, target, and its body or `None` if the body
/// could not be read whole.
pub type Seen = (String, String, Option<Vec<u8>>);

/// What a server made of a byte stream: the requests it handed on, in order, and the
/// status it refused the stream with, if it answered a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub requests: Vec<Seen>,
    pub refused: Option<u16>,
}

/// What the engine makes of `bytes`.
pub fn engine(bytes: &[u8], max_header_size: usize) -> Outcome {
    let (scanned, ending) = http1::scan(bytes, HeadLimits { max_header_size });
    let mut requests = Vec::new();
    for message in scanned {
        let connect = message.head.method == Method::CONNECT;
        requests.push((
            message.head.method.to_string(),
            message.head.uri.to_string(),
            message.body.ok(),
        ));
        // The gateway refuses CONNECT and closes, as the reference service does.
        if connect {
            return Outcome {
                requests,
                refused: None,
            };
        }
    }
    let refused = match ending {
        Ending::Refused(error) => error.status().map(|status| status.as_u16()),
        _ => None,
    };
    Outcome { requests, refused }
}

/// Whether the two outcomes agree: the same requests, and the same refusal or one of
/// two refusals that differ by design. The engine judges a head on its first
/// `max_header_size` bytes, whole, however they arrived: 400 if they hold a malformed
/// byte, else 431 if they hold no complete head. hyper judges whatever its buffer holds
/// when it parses, and it parses only when a read brought the first bytes of a head or
/// an empty line (`is_complete_fast` in hyper's `proto/h1/role.rs`); otherwise it reads
/// on, and answers 431 once its buffer is full. So:
///
/// - the engine 431, hyper 400: a malformed byte past the engine's window that one of
///   hyper's reads brought in before its buffer was full (the engine, given room,
///   finds it too);
/// - the engine 400, hyper 431: a malformed byte within the window that hyper never
///   looked at, no empty line coming before its buffer was full (hyper, given room,
///   does not answer 431).
///
/// Both refuse the same head and close; only the status says which rule fired first,
/// and the engine's does not depend on how the bytes arrived.
pub fn agree(bytes: &[u8], ours: &Outcome, reference: &Outcome) -> bool {
    /// Room for any head of the streams these tests and the fuzz targets make.
    const ROOM: usize = 1 << 20;
    if ours == reference {
        return true;
    }
    if ours.requests != reference.requests {
        return false;
    }
    match (ours.refused, reference.refused) {
        (Some(431), Some(400)) => engine(bytes, ROOM).refused == Some(400),
        (Some(400), Some(431)) => {
            let roomy = block_on(hyper(bytes, ROOM));
            roomy.requests == ours.requests && matches!(roomy.refused, Some(400) | None)
        }
        _ => false,
    }
}

/// What hyper's HTTP/1.1 server makes of `bytes`, configured as the gateway configures
/// it (`max_header_size`, a read buffer of at least 8 KiB), over an in-memory pipe: the
/// bytes are written, the write side closed, and everything hyper answers is read. The
/// service reads each body whole and answers 200, or (to a `CONNECT`, or after a body
/// that failed) 418 and closes, as the gateway closes there.
pub async fn hyper(bytes: &[u8], max_header_size: usize) -> Outcome {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let (client, server_io) = tokio::io::duplex(1 << 16);
    let service = {
        let seen = Arc::clone(&seen);
        service_fn(move |request: Request<Incoming>| {
            let seen = Arc::clone(&seen);
            async move {
                let method = request.method().clone();
                let target = request.uri().to_string();
                let body = request.into_body().collect().await.ok();
                let whole = body.is_some();
                if let Ok(mut seen) = seen.lock() {
                    let body = body.map(|body| body.to_bytes().to_vec());
                    seen.push((method.to_string(), target, body));
                }
                let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                if method == Method::CONNECT || !whole {
                    *response.status_mut() = StatusCode::IM_A_TEAPOT;
                    response.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let mut builder = server::Builder::new();
    builder
        .max_buf_size(max_header_size.max(8192))
        .max_header_size(max_header_size)
        .half_close(true)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(server_io), service);
    let (mut reader, mut writer) = tokio::io::split(client);
    let write = async {
        let _ = writer.write_all(bytes).await;
        let _ = writer.shutdown().await;
    };
    let mut output = Vec::new();
    let read = reader.read_to_end(&mut output);
    let (_, _, _) = tokio::join!(
        async {
            // The server's end of the pipe closes when the connection ends, which ends
            // the read.
            let _ = connection.await;
        },
        write,
        read
    );
    let requests = seen.lock().map(|seen| seen.clone()).unwrap_or_default();
    Outcome {
        requests,
        refused: refusal(&output),
    }
}

/// What the engine's server (`fluxlit::http1::server::serve`) makes of `bytes`, over an
/// in-memory pipe as [`hyper`] is run, with a handler that does what the reference
/// service does: each body read whole, 200, or 418 and `Connection: close` to a
/// `CONNECT` or after a body that failed.
pub async fn engine_server(bytes: &[u8], max_header_size: usize) -> Outcome {
    use fluxlit::http1::server::{self as engine_server, GracefulStop, RequestBody, Settings};

    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let (client, server_io) = tokio::io::duplex(1 << 16);
    let handler = |request: Request<RequestBody>| {
        let seen = Arc::clone(&seen);
        async move {
            let method = request.method().clone();
            let target = request.uri().to_string();
            let body = request.into_body().collect().await.ok();
            let whole = body.is_some();
            if let Ok(mut seen) = seen.lock() {
                let body = body.map(|body| body.to_bytes().to_vec());
                seen.push((method.to_string(), target, body));
            }
            let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
            if method == Method::CONNECT || !whole {
                *response.status_mut() = StatusCode::IM_A_TEAPOT;
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            response
        }
    };
    let stop = GracefulStop::default();
    let settings = Settings {
        max_header_size,
        // As the gateway without h2c: the reference is an HTTP/1.1 server only.
        http2_prior_knowledge: false,
    };
    let connection = engine_server::serve(server_io, settings, &stop, handler);
    let (mut reader, mut writer) = tokio::io::split(client);
    let write = async {
        let _ = writer.write_all(bytes).await;
        let _ = writer.shutdown().await;
    };
    let mut output = Vec::new();
    let read = reader.read_to_end(&mut output);
    let (_, _, _) = tokio::join!(
        async {
            // `serve` owns the server's end of the pipe and drops it when it returns,
            // which ends the read.
            let _ = connection.await;
        },
        write,
        read
    );
    let requests = seen.lock().map(|seen| seen.clone()).unwrap_or_default();
    Outcome {
        requests,
        refused: refusal(&output),
    }
}

/// The status of the refusal hyper answered with, if any: a status its service never
/// sends (the service sends 200 and 418; hyper itself 100 before a body).
fn refusal(output: &[u8]) -> Option<u16> {
    let mut refused = None;
    for at in 0..output.len() {
        let rest = &output[at..];
        // Responses follow each other without a line between (a body of "ok" ends
        // right before the next status line).
        if rest.len() >= 12 && rest.starts_with(b"HTTP/1.") {
            let status = std::str::from_utf8(&rest[9..12])
                .ok()
                .and_then(|s| s.parse::<u16>().ok());
            if let Some(status) = status.filter(|s| ![100, 200, 418].contains(s)) {
                refused = Some(status);
            }
        }
    }
    refused
}

/// What a client made of an upstream's bytes: the final response's status and its body
/// (`None` if the body could not be read whole), or `None` if no response was taken.
pub type ResponseOutcome = Option<(u16, Option<Vec<u8>>)>;

/// What the engine makes of `bytes` as the answer to a `method` request.
pub fn engine_response(bytes: &[u8], method: &Method, max_header_size: usize) -> ResponseOutcome {
    http1::scan_response(bytes, method, HeadLimits { max_header_size })
        .ok()
        .map(|(head, body)| (head.status.as_u16(), body.ok()))
}

/// What hyper's HTTP/1.1 client, configured as the upstream pool configures it (a read
/// buffer of at least 8 KiB, `max_header_size`), makes of `bytes` sent back to one
/// `method` request over an in-memory pipe, the server's side closed after them.
pub async fn hyper_response(
    bytes: &[u8],
    method: &Method,
    max_header_size: usize,
) -> ResponseOutcome {
    use hyper::client::conn::http1 as client;
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    let mut builder = client::Builder::new();
    builder
        .max_buf_size(max_header_size.max(8192))
        .max_header_size(max_header_size);
    let (mut sender, connection) = builder
        .handshake::<_, http_body_util::Empty<Bytes>>(TokioIo::new(client_io))
        .await
        .ok()?;
    let server = upstream(server_io, bytes.to_vec());
    let request = Request::builder()
        .method(method.clone())
        .uri("/")
        .header(http::header::HOST, "upstream")
        .body(http_body_util::Empty::new())
        .ok()?;
    let exchange = async move {
        let response = sender.send_request(request).await.ok()?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.ok();
        Some((status, body.map(|body| body.to_bytes().to_vec())))
    };
    let (_, _, outcome) = tokio::join!(
        async {
            let _ = connection.with_upgrades().await;
        },
        server,
        exchange
    );
    outcome
}

/// What the engine's client (`fluxlit::http1::client::Connection`) makes of `bytes` sent
/// back to one `method` request, over an in-memory pipe as [`hyper_response`] is run:
/// the request sent, the response's body read whole.
pub async fn engine_client_response(
    bytes: &[u8],
    method: &Method,
    max_header_size: usize,
) -> ResponseOutcome {
    use fluxlit::http1::client::{Connection, Declared, Fields, Outgoing};

    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    let server = upstream(server_io, bytes.to_vec());
    let mut fields = Fields::default();
    fields.append(
        &http::header::HOST,
        &http::HeaderValue::from_static("upstream"),
    );
    let mut request = Outgoing {
        method: method.clone(),
        target: http::Uri::from_static("/"),
        fields,
        declared: Declared::Nothing,
        body: http_body_util::Empty::<Bytes>::new(),
    };
    let exchange = async move {
        // The connection (and its end of the pipe) goes with the response body, or
        // with the failure, which lets the upstream's last read end.
        let response = Connection::new(client_io, max_header_size)
            .send(&mut request)
            .await
            .ok()?;
        let status = response.status.as_u16();
        let body = response.body.collect().await.ok();
        Some((status, body.map(|body| body.to_bytes().to_vec())))
    };
    let (_, outcome) = tokio::join!(server, exchange);
    outcome
}

/// An upstream on `io` that answers the first request head with `answer`, then closes
/// its side, and keeps reading until the client lets go of the connection.
async fn upstream(io: tokio::io::DuplexStream, answer: Vec<u8>) {
    let (mut read, mut write) = tokio::io::split(io);
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match read.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
    }
    let _ = write.write_all(&answer).await;
    let _ = write.shutdown().await;
    let _ = read.read(&mut buffer).await;
}

/// Runs `future` on a fresh single-threaded runtime, failing after 10 seconds.
pub fn block_on<T>(future: impl Future<Output = T>) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), future)
            .await
            .expect("the reference server hung")
    })
}
