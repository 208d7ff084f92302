//! The chunked transfer coding (RFC 9112 §7.1), decoded as it arrives: a state machine
//! over whatever bytes are in hand, handing back where the data lies so the caller can
//! pass it on without a copy. Chunk extensions are skipped; trailer fields are kept as
//! the bytes they came in, after they are checked as header fields.
//!
//! The rules are hyper's, kept exactly (the differential tests hold the two together):
//! a size line is hex digits, optional spaces or tabs, an optional `;` extension, then
//! CRLF; the extension may not hold a bare LF; chunk data is followed by CRLF; at most
//! 16 KiB of extensions per body; trailers at most `max_trailer_size` bytes and
//! [`MAX_HEADERS`] fields.

use http::{HeaderName, HeaderValue};

use super::request::MAX_HEADERS;

/// The most bytes of chunk extensions a body may carry, in all its chunks together.
const MAX_EXTENSION_BYTES: u64 = 16 * 1024;

/// Why a chunked body could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body: {0}")]
pub struct ChunkError(pub &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Size,
    SizeSpace,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Trailer,
    TrailerLf,
    EndCr,
    EndLf,
    End,
}

/// What one call to [`ChunkedDecoder::decode`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input used up, framing and data alike.
    pub consumed: usize,
    /// Where the chunk data found in this call lies in the input (empty if none).
    pub data: (usize, usize),
}

/// Decodes one chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// The size being read, then what is left of the chunk's data.
    remaining: u64,
    extension_bytes: u64,
    trailers: Option<Vec<u8>>,
    trailer_fields: usize,
    max_trailer_size: usize,
}

impl ChunkedDecoder {
    /// A decoder for a body whose trailer section may be up to `max_trailer_size` bytes
    /// (the listener's `max_header_size`).
    pub fn new(max_trailer_size: usize) -> Self {
        Self {
            state: State::Start,
            remaining: 0,
            extension_bytes: 0,
            trailers: None,
            trailer_fields: 0,
            max_trailer_size,
        }
    }

    /// Whether the body has ended (the last chunk and the trailer section read).
    pub fn is_done(&self) -> bool {
        self.state == State::End
    }

    /// The trailer section as sent (fields and the CRLF that ends it), once the body
    /// has ended with one.
    pub fn trailers(&self) -> Option<&[u8]> {
        self.trailers.as_deref().filter(|_| self.is_done())
    }

    /// Reads framing from `input` until it finds chunk data (whose place it returns,
    /// the data counted as consumed), reaches the end of the body, or uses up the
    /// input. Call again with the rest while neither `consumed` is the whole input nor
    /// the body [is done](Self::is_done).
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, ChunkError> {
        let mut at = 0;
        while at < input.len() && self.state != State::End {
            if self.state == State::Data {
                let available = (input.len() - at) as u64;
                let take = self.remaining.min(available);
                // `take` is at most what is left of the input, a usize.
                let end = at + usize::try_from(take).unwrap_or(input.len() - at);
                self.remaining -= take;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                return Ok(Decoded {
                    consumed: end,
                    data: (at, end),
                });
            }
            let byte = input[at];
            at += 1;
            self.state = self.step(byte)?;
            if self.state == State::End {
                self.check_trailers()?;
            }
        }
        Ok(Decoded {
            consumed: at,
            data: (at, at),
        })
    }

    fn step(&mut self, byte: u8) -> Result<State, ChunkError> {
        Ok(match self.state {
            State::Start => {
                self.add_digit(byte)
                    .ok_or(ChunkError("missing chunk size digit"))??;
                State::Size
            }
            State::Size => match byte {
                b'\t' | b' ' => State::SizeSpace,
                b';' => State::Extension,
                b'\r' => State::SizeLf,
                _ => {
                    self.add_digit(byte)
                        .ok_or(ChunkError("invalid chunk size"))??;
                    State::Size
                }
            },
            State::SizeSpace => match byte {
                b'\t' | b' ' => State::SizeSpace,
                b';' => State::Extension,
                b'\r' => State::SizeLf,
                _ => return Err(ChunkError("invalid whitespace after the chunk size")),
            },
            State::Extension => match byte {
                b'\r' => State::SizeLf,
                b'\n' => return Err(ChunkError("a chunk extension holds a bare LF")),
                _ => {
                    self.extension_bytes += 1;
                    if self.extension_bytes >= MAX_EXTENSION_BYTES {
                        return Err(ChunkError("chunk extensions over 16 KiB"));
                    }
                    State::Extension
                }
            },
            State::SizeLf => match byte {
                b'\n' if self.remaining == 0 => State::EndCr,
                b'\n' => State::Data,
                _ => return Err(ChunkError("the chunk size line does not end in CRLF")),
            },
            // Taken in bulk by `decode`.
            State::Data => State::Data,
            State::DataCr => match byte {
                b'\r' => State::DataLf,
                _ => return Err(ChunkError("chunk data is not followed by CRLF")),
            },
            State::DataLf => match byte {
                b'\n' => State::Start,
                _ => return Err(ChunkError("chunk data is not followed by CRLF")),
            },
            State::Trailer => {
                self.push_trailer(byte)?;
                match byte {
                    b'\r' => State::TrailerLf,
                    _ => State::Trailer,
                }
            }
            State::TrailerLf => match byte {
                b'\n' => {
                    if self.trailer_fields >= MAX_HEADERS {
                        return Err(ChunkError("too many trailer fields"));
                    }
                    self.trailer_fields += 1;
                    self.push_trailer(byte)?;
                    State::EndCr
                }
                _ => return Err(ChunkError("a trailer field does not end in CRLF")),
            },
            State::EndCr => match byte {
                b'\r' => {
                    if self.trailers.is_some() {
                        self.push_trailer(byte)?;
                    }
                    State::EndLf
                }
                _ => {
                    match &mut self.trailers {
                        // The first byte of the section is not checked against the
                        // limit (as in hyper); every later one is.
                        None => self.trailers = Some(vec![byte]),
                        Some(_) => self.push_trailer(byte)?,
                    }
                    State::Trailer
                }
            },
            State::EndLf => match byte {
                b'\n' => {
                    if self.trailers.is_some() {
                        self.push_trailer(byte)?;
                    }
                    State::End
                }
                _ => return Err(ChunkError("the chunked body does not end in CRLF")),
            },
            State::End => State::End,
        })
    }

    /// Adds a hex digit to the size: `None` if `byte` is none, an error on overflow.
    fn add_digit(&mut self, byte: u8) -> Option<Result<(), ChunkError>> {
        let digit = match byte {
            b'0'..=b'9' => byte - b'0',
            b'a'..=b'f' => byte - b'a' + 10,
            b'A'..=b'F' => byte - b'A' + 10,
            _ => return None,
        };
        Some(
            self.remaining
                .checked_mul(16)
                .and_then(|size| size.checked_add(u64::from(digit)))
                .map(|size| self.remaining = size)
                .ok_or(ChunkError("the chunk size overflows")),
        )
    }

    fn push_trailer(&mut self, byte: u8) -> Result<(), ChunkError> {
        let trailers = self.trailers.get_or_insert_with(Vec::new);
        trailers.push(byte);
        if trailers.len() >= self.max_trailer_size {
            return Err(ChunkError("the trailer section is over max_header_size"));
        }
        Ok(())
    }

    /// The trailer section must be header fields (as hyper checks them).
    fn check_trailers(&self) -> Result<(), ChunkError> {
        let Some(bytes) = &self.trailers else {
            return Ok(());
        };
        let mut fields = vec![httparse::EMPTY_HEADER; self.trailer_fields];
        match httparse::parse_headers(bytes, &mut fields) {
            Ok(httparse::Status::Complete((_, fields))) => {
                for field in fields.iter() {
                    if HeaderName::from_bytes(field.name.as_bytes()).is_err()
                        || HeaderValue::from_bytes(field.value).is_err()
                    {
                        return Err(ChunkError("an invalid trailer field"));
                    }
                }
                Ok(())
            }
            Ok(httparse::Status::Partial) => Err(ChunkError("an incomplete trailer section")),
            Err(_) => Err(ChunkError("an invalid trailer section")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` in pieces of `step` bytes: the data, and where the body ended.
    fn decode(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut decoder = ChunkedDecoder::new(8192);
        let (mut data, mut at) = (Vec::new(), 0);
        let mut end = 0;
        while !decoder.is_done() && end < input.len() {
            end = (end + step).min(input.len());
            while at < end && !decoder.is_done() {
                let decoded = decoder.decode(&input[at..end])?;
                data.extend_from_slice(&input[at + decoded.data.0..at + decoded.data.1]);
                at += decoded.consumed;
            }
        }
        assert!(decoder.is_done(), "incomplete");
        Ok((data, at))
    }

    #[test]
    fn chunks_decode_the_same_whatever_the_pieces() {
        let body = b"5;name=value\r\nhello\r\nA \r\n0123456789\r\n0\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 100] {
            let (data, end) = decode(body, step).unwrap();
            assert_eq!(data, b"hello0123456789");
            assert_eq!(&body[end..], b"NEXT");
        }
    }

    #[test]
    fn trailers_are_checked_and_kept() {
        let body = b"1\r\na\r\n0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n";
        let mut decoder = ChunkedDecoder::new(8192);
        let mut at = 0;
        while !decoder.is_done() {
            at += decoder.decode(&body[at..]).unwrap().consumed;
        }
        assert_eq!(at, body.len());
        assert_eq!(
            decoder.trailers(),
            Some(&b"X-Sum: 1\r\nX-Other: 2\r\n\r\n"[..])
        );
        assert!(decode(b"0\r\nX Bad: 1\r\n\r\n", 100).is_err());
    }

    #[test]
    fn malformed_framing_is_refused() {
        for bad in [
            &b"fffffffffffffffff\r\nhello\r\n0\r\n\r\n"[..],
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"\r\n",
        ] {
            assert!(decode(bad, 100).is_err(), "{bad:?}");
        }
    }
}
