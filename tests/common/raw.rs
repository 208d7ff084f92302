//! HTTP/1.1 as bytes over a `TcpStream`, for requests a client library would tidy up
//! (targets with dot segments, repeated or odd headers) and for watching a connection
//! itself: whether the gateway keeps it open or closes it.

use std::net::{IpAddr, SocketAddr};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::within;

/// A response read off a raw connection.
#[derive(Debug)]
pub struct RawReply {
    /// The status line's version, as sent (`HTTP/1.1`).
    pub version: String,
    pub status: u16,
    /// Names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The values a recording upstream saw for header `name`.
    pub fn upstream_header(&self, name: &str) -> Vec<String> {
        super::recorded_header(&self.json(), name)
    }
}

/// A TCP connection to `addr` from source address `source`.
pub async fn connect_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind source address");
    within("connect", socket.connect(addr))
        .await
        .expect("connect")
}

/// `GET target` with `Host: host` and `headers` (each a full `Name: value` line), byte
/// for byte: nothing normalises the target or the headers.
pub fn get_request(target: &str, host: &str, headers: &[&str]) -> String {
    let mut text = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n");
    for line in headers {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text
}

/// `POST target` with `Host: host`, `headers` (each a full `Name: value` line), a
/// `Content-Type` and `Content-Length`, and `body`, byte for byte.
pub fn post_request(
    target: &str,
    host: &str,
    headers: &[&str],
    content_type: &str,
    body: &str,
) -> String {
    let content_type = format!("Content-Type: {content_type}");
    let content_length = format!("Content-Length: {}", body.len());
    let mut lines = headers.to_vec();
    lines.push(&content_type);
    lines.push(&content_length);
    let head = get_request(target, host, &lines);
    let head = head.replacen("GET ", "POST ", 1);
    head + body
}

/// Sends `POST target` byte for byte from `source` with `Connection: close`, the extra
/// header lines and `body` of `content_type`, and reads the response.
pub async fn raw_post(
    source: IpAddr,
    addr: SocketAddr,
    target: &str,
    headers: &[&str],
    content_type: &str,
    body: &str,
) -> RawReply {
    let mut lines = headers.to_vec();
    lines.push("Connection: close");
    let request = post_request(target, &addr.to_string(), &lines, content_type, body);
    within(
        &format!("raw POST {target}"),
        exchange(source, addr, &request),
    )
    .await
}

/// Writes `request` as bytes, exactly as given, and reads one response.
pub async fn exchange(source: IpAddr, addr: SocketAddr, request: &str) -> RawReply {
    let mut stream = connect_from(source, addr).await;
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    read_reply(&mut stream).await
}

/// Sends `GET target` byte for byte from `source` with `Connection: close` and the extra
/// header lines, and reads the response.
pub async fn raw_get(source: IpAddr, addr: SocketAddr, target: &str, headers: &[&str]) -> RawReply {
    let mut lines = headers.to_vec();
    lines.push("Connection: close");
    let request = get_request(target, &addr.to_string(), &lines);
    within(
        &format!("raw GET {target}"),
        exchange(source, addr, &request),
    )
    .await
}

/// Reads one HTTP/1.1 response (content-length, chunked, or until EOF), leaving the
/// connection usable for the next exchange.
pub async fn read_reply(stream: &mut TcpStream) -> RawReply {
    within("reading a response", async {
        let mut buffer = Vec::new();
        let head_end = loop {
            if let Some(at) = find(&buffer, b"\r\n\r\n") {
                break at + 4;
            }
            let n = read_more(stream, &mut buffer).await;
            assert!(
                n > 0,
                "connection closed before a complete response head: {:?}",
                String::from_utf8_lossy(&buffer)
            );
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let version = status_line.split(' ').next().unwrap_or_default().to_owned();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut body = buffer.split_off(head_end);
        let value = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        if value("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            body = loop {
                if let Some(decoded) = decode_chunked(&body) {
                    break decoded;
                }
                let n = read_more(stream, &mut body).await;
                assert!(n > 0, "connection closed inside a chunked body");
            };
        } else if let Some(length) = value("content-length") {
            let length: usize = length.parse().expect("content-length is a number");
            while body.len() < length {
                let n = read_more(stream, &mut body).await;
                assert!(n > 0, "connection closed inside a body of {length} bytes");
            }
            body.truncate(length);
        } else if status >= 200 && status != 204 && status != 304 {
            while read_more(stream, &mut body).await > 0 {}
        }
        RawReply {
            version,
            status,
            headers,
            body,
        }
    })
    .await
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream
        .read(&mut chunk)
        .await
        .expect("read from the gateway");
    buffer.extend_from_slice(&chunk[..n]);
    n
}

/// Where `needle` first stands in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The decoded body, or `None` while the chunked encoding is incomplete.
fn decode_chunked(mut input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(input, b"\r\n")?;
        let size_text = String::from_utf8_lossy(&input[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).expect("chunk size");
        input = &input[line_end + 2..];
        if size == 0 {
            // No trailers are expected: the body ends with an empty line.
            return input.starts_with(b"\r\n").then_some(out);
        }
        if input.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&input[..size]);
        input = &input[size + 2..];
    }
}

/// Whether a read shows the peer closed the connection (EOF or reset). Panics when the
/// gateway sends bytes instead.
pub async fn read_shows_closed(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 1024];
    match stream.read(&mut buffer).await {
        Ok(0) => true,
        Ok(n) => panic!(
            "expected the connection to be closed, got {:?}",
            String::from_utf8_lossy(&buffer[..n])
        ),
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
    }
}
