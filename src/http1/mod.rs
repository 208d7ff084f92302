//! fluxlit's own HTTP/1.1 engine: the message parsers, the server side of a connection
//! ([`server`]) that the public listener speaks HTTP/1.1 with, and the client side
//! ([`client`]) that every request to an upstream goes out on.
//!
//! Heads are parsed by `httparse` where they lie in the connection's buffer
//! ([`parse_request`]: no header copied, the fields handed back as positions); the
//! framing of the body is decided from them once ([`BodyLength`]), and a chunked body
//! is decoded as it arrives ([`ChunkedDecoder`]), telling where its data lies so that
//! it can be passed on without a copy. [`scan`] puts these together over a byte stream
//! the way a connection reads: it and [`server::serve`] are what the differential
//! tests (`tests/http1_differential.rs`, the `http1_request` fuzz target) hold against
//! hyper's server, which must find the same messages and refuse the same bytes; the
//! `http1_response` target does the same for [`scan_response`] and [`client`] against
//! hyper's client.
//!
//! Nothing here knows the gateway: a leaf, like `http.rs`.

pub mod chunked;
pub mod client;
mod fields;
pub mod io;
pub mod lines;
pub mod request;
pub mod response;
pub mod server;
mod spares;

pub use chunked::{ChunkError, ChunkedDecoder, Decoded};
pub use io::{Io, Upgraded};
pub use lines::{Fields, HeaderLines};
pub use request::{
    BodyLength, HeadError, HeadLimits, HeaderIndex, MAX_HEADERS, MAX_TARGET_LEN, RequestHead,
    parse_request,
};
pub use response::{ResponseBody, ResponseHead, parse_response};

/// One request found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    pub head: RequestHead,
    /// The body's data (chunked framing removed), or why it could not be read whole.
    pub body: Result<Vec<u8>, BodyEnd>,
}

/// Why a body was not read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// The bytes ran out first.
    Incomplete,
    Malformed(ChunkError),
}

/// How a byte stream ended for the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every byte belonged to a request.
    Clean,
    /// A request that allows no other after it (`Connection: close`, HTTP/1.0, a length
    /// beside chunked); what followed was not read.
    Closed,
    /// A head that was refused: answered with its status (if any), then closed.
    Refused(HeadError),
    /// The bytes ran out within a head.
    IncompleteHead,
    /// A body could not be read whole (see the last request's body).
    BrokenBody,
}

/// The requests in `bytes` as a connection reads them, one after another, and how the
/// stream ended.
pub fn scan(bytes: &[u8], limits: HeadLimits) -> (Vec<Scanned>, Ending) {
    let mut found = Vec::new();
    let mut fields = Vec::new();
    let mut rest = bytes;
    loop {
        if rest.is_empty() {
            return (found, Ending::Clean);
        }
        let head = match parse_request(rest, limits, &mut fields) {
            Ok(Some(head)) => head,
            Ok(None) => return (found, Ending::IncompleteHead),
            Err(error) => return (found, Ending::Refused(error)),
        };
        rest = rest.get(head.len..).unwrap_or_default();
        let (body, used) = read_body(rest, head.body, limits.max_header_size);
        rest = rest.get(used..).unwrap_or_default();
        let (broken, keep_alive) = (body.is_err(), head.keep_alive);
        found.push(Scanned { head, body });
        if broken {
            return (found, Ending::BrokenBody);
        }
        if !keep_alive {
            return (found, Ending::Closed);
        }
    }
}

/// Why [`scan_response`] found no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoResponse {
    Refused(HeadError),
    /// The bytes ran out within a head.
    IncompleteHead,
}

/// The final response to a `method` request at the start of `bytes` (interim 1xx
/// responses before it skipped, as a client skips them) and its body, the way a
/// connection to an upstream reads them.
pub fn scan_response(
    bytes: &[u8],
    method: &http::Method,
    limits: HeadLimits,
) -> Result<(ResponseHead, Result<Vec<u8>, BodyEnd>), NoResponse> {
    let mut fields = Vec::new();
    let mut rest = bytes;
    loop {
        let head = match parse_response(rest, method, limits, &mut fields) {
            Ok(Some(head)) => head,
            Ok(None) => return Err(NoResponse::IncompleteHead),
            Err(error) => return Err(NoResponse::Refused(error)),
        };
        rest = rest.get(head.len..).unwrap_or_default();
        if head.is_interim() {
            continue;
        }
        let body = match head.body {
            ResponseBody::Empty => Ok(Vec::new()),
            ResponseBody::UntilClose => Ok(rest.to_vec()),
            ResponseBody::Length(length) => {
                read_body(rest, BodyLength::Length(length), limits.max_header_size).0
            }
            ResponseBody::Chunked => read_body(rest, BodyLength::Chunked, limits.max_header_size).0,
        };
        return Ok((head, body));
    }
}

/// A body's data and the bytes of `input` it took.
fn read_body(
    input: &[u8],
    length: BodyLength,
    max_trailer_size: usize,
) -> (Result<Vec<u8>, BodyEnd>, usize) {
    match length {
        BodyLength::Length(length) => match usize::try_from(length) {
            Ok(length) if length <= input.len() => (Ok(input[..length].to_vec()), length),
            _ => (Err(BodyEnd::Incomplete), input.len()),
        },
        BodyLength::Chunked => {
            let mut decoder = ChunkedDecoder::new(max_trailer_size);
            let (mut data, mut at) = (Vec::new(), 0);
            while !decoder.is_done() {
                if at == input.len() {
                    return (Err(BodyEnd::Incomplete), at);
                }
                match decoder.decode(&input[at..]) {
                    Ok(decoded) => {
                        data.extend_from_slice(&input[at + decoded.data.0..at + decoded.data.1]);
                        at += decoded.consumed;
                    }
                    Err(error) => return (Err(BodyEnd::Malformed(error)), at),
                }
            }
            (Ok(data), at)
        }
    }
}
