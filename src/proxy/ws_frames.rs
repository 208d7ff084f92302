//! Where WebSocket frames start in a byte stream that is copied, not decoded.
//!
//! A tunnel copies bytes unchanged; to end it with a close frame of its own it must
//! stop between two frames, never inside one. [`FrameTracker`] reads each RFC 6455
//! frame header (§5.2) as it passes — FIN and opcode, mask bit, 7/16/64-bit payload
//! length, masking key — and then only counts payload bytes. It keeps at most one
//! header (14 bytes) and never looks at payloads, so it costs nothing per message.
//!
//! The length is held in a `u64` and only ever decreased by what was seen: a hostile
//! header that claims 2^64 − 1 bytes makes the tracker wait for them, never overflow.

/// The longest frame header: 2 bytes, a 64-bit length and a masking key.
const MAX_HEADER: usize = 14;
const OPCODE_CLOSE: u8 = 0x8;

/// Follows the frames of one direction of a WebSocket connection.
#[derive(Debug, Clone, Default)]
pub struct FrameTracker {
    /// Header bytes read so far; empty between frames.
    header: [u8; MAX_HEADER],
    header_len: usize,
    /// Payload bytes of the current frame not seen yet.
    payload_left: u64,
    close_seen: bool,
}

impl FrameTracker {
    /// Whether the bytes seen so far end exactly at a frame boundary.
    pub fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.payload_left == 0
    }

    /// Whether a close frame has gone by: the receiver must not get a second one.
    pub fn close_seen(&self) -> bool {
        self.close_seen
    }

    /// Reads `data` as the next bytes of the stream.
    pub fn advance(&mut self, data: &[u8]) {
        let mut rest = data;
        while !rest.is_empty() {
            rest = &rest[self.step(rest)..];
        }
    }

    /// How many bytes of `data` complete the frame in progress: the tracker has read
    /// them and now stands at a boundary. `None` when all of `data` belongs to it (and
    /// was read). At a boundary already, that is `Some(0)`.
    pub fn advance_to_boundary(&mut self, data: &[u8]) -> Option<usize> {
        let mut used = 0;
        while !self.at_boundary() {
            if used == data.len() {
                return None;
            }
            used += self.step(&data[used..]);
        }
        Some(used)
    }

    /// Consumes a header byte run or a payload run from the front of `data` (not
    /// empty); returns how many bytes it took.
    fn step(&mut self, data: &[u8]) -> usize {
        if self.payload_left > 0 {
            let take = usize::try_from(self.payload_left)
                .unwrap_or(usize::MAX)
                .min(data.len());
            // `take` is at most `payload_left`, so this never goes below zero.
            self.payload_left -= take as u64;
            return take;
        }
        // Reading a header: take what is needed and no more, since the bytes after it
        // are payload.
        if self.header_len < 2 {
            self.header[self.header_len] = data[0];
            self.header_len += 1;
            if self.header_len == 2 {
                self.finish_header_if_complete();
            }
            return 1;
        }
        let needed = header_size(self.header[1]) - self.header_len;
        let take = needed.min(data.len());
        self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
        self.header_len += take;
        self.finish_header_if_complete();
        take
    }

    fn finish_header_if_complete(&mut self) {
        let size = header_size(self.header[1]);
        if self.header_len < size {
            return;
        }
        let length = match self.header[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&self.header[2..10]);
                u64::from_be_bytes(bytes)
            }
            short => u64::from(short),
        };
        if self.header[0] & 0x0f == OPCODE_CLOSE {
            self.close_seen = true;
        }
        self.payload_left = length;
        self.header_len = 0;
    }
}

/// The header's full size, from its second byte (mask bit and length code).
fn header_size(second: u8) -> usize {
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

/// A close frame (FIN, opcode 8) with `code` and a short `reason`. With a `mask` key it
/// is masked, as every frame a client sends must be (§5.3); toward a client, without.
pub fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    // A control frame's payload is at most 125 bytes (§5.5): cut the reason to fit, on a
    // character boundary so it stays UTF-8.
    let mut reason_len = reason.len().min(123);
    while !reason.is_char_boundary(reason_len) {
        reason_len -= 1;
    }
    let mut payload = Vec::with_capacity(2 + reason_len);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..reason_len]);

    let mut frame = Vec::with_capacity(6 + payload.len());
    frame.push(0x80 | OPCODE_CLOSE);
    // At most 125: it fits the 7-bit length.
    let length = payload.len() as u8;
    match mask {
        Some(key) => {
            frame.push(0x80 | length);
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => {
            frame.push(length);
            frame.extend_from_slice(&payload);
        }
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, payload_len: usize, masked: bool) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        if payload_len < 126 {
            out.push(mask_bit | payload_len as u8);
        } else if payload_len <= usize::from(u16::MAX) {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(payload_len as u16).to_be_bytes());
        } else {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(payload_len as u64).to_be_bytes());
        }
        if masked {
            out.extend_from_slice(&[1, 2, 3, 4]);
        }
        // Payload bytes that look like headers, to catch a tracker that reads them.
        out.extend((0..payload_len).map(|i| if i % 2 == 0 { 0x88 } else { 0xff }));
        out
    }

    /// A stream of frames of every header form, and the offsets where frames end.
    fn stream() -> (Vec<u8>, Vec<usize>) {
        let frames = [
            frame(0x1, 5, false),
            frame(0x2, 0, true),
            frame(0x9, 125, true),
            frame(0x2, 126, false),
            frame(0x0, 300, true),
            frame(0x2, 70_000, true),
            frame(0x1, 1, false),
        ];
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for f in frames {
            bytes.extend_from_slice(&f);
            ends.push(bytes.len());
        }
        (bytes, ends)
    }

    /// Feeds `bytes` in reads split at `cuts` and records every offset where the
    /// tracker stands at a boundary after a read.
    fn boundaries_seen(bytes: &[u8], cuts: &[usize]) -> Vec<usize> {
        let mut tracker = FrameTracker::default();
        let mut seen = Vec::new();
        let mut offset = 0;
        for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
            let mut chunk = &bytes[offset..cut];
            // Step from boundary to boundary, as a tunnel that stops would.
            while !chunk.is_empty() {
                let start = cut - chunk.len();
                if tracker.at_boundary() {
                    // Move past one byte so the next boundary is a new one.
                    tracker.advance(&chunk[..1]);
                    chunk = &chunk[1..];
                    if tracker.at_boundary() {
                        seen.push(start + 1);
                    }
                    continue;
                }
                match tracker.advance_to_boundary(chunk) {
                    Some(used) => {
                        seen.push(start + used);
                        chunk = &chunk[used..];
                    }
                    None => chunk = &[],
                }
            }
            offset = cut;
        }
        seen
    }

    #[test]
    fn finds_every_frame_end_when_the_stream_is_split_at_any_position() {
        let (bytes, ends) = stream();
        // Every single split point, and every pair of split points in the headers'
        // neighbourhood (the payloads in between only count down).
        for cut in 0..=bytes.len() {
            assert_eq!(boundaries_seen(&bytes, &[cut]), ends, "split at {cut}");
        }
        let near_headers: Vec<usize> = std::iter::once(0)
            .chain(ends.iter().copied())
            .flat_map(|end| end..(end + 16).min(bytes.len()))
            .collect();
        for &a in &near_headers {
            for &b in near_headers.iter().filter(|&&b| b >= a) {
                assert_eq!(boundaries_seen(&bytes, &[a, b]), ends, "split at {a}, {b}");
            }
        }
    }

    #[test]
    fn one_byte_at_a_time_ends_at_a_boundary() {
        let (bytes, _) = stream();
        let mut tracker = FrameTracker::default();
        for byte in &bytes {
            tracker.advance(std::slice::from_ref(byte));
        }
        assert!(tracker.at_boundary());
        tracker.advance(&bytes[..1]);
        assert!(!tracker.at_boundary());
    }

    #[test]
    fn a_header_claiming_the_largest_length_waits_without_overflow() {
        let mut header = vec![0x82, 0xff];
        header.extend_from_slice(&u64::MAX.to_be_bytes());
        header.extend_from_slice(&[9, 9, 9, 9]);
        let mut tracker = FrameTracker::default();
        tracker.advance(&header);
        tracker.advance(&[0; 4096]);
        assert!(!tracker.at_boundary());
        assert_eq!(tracker.advance_to_boundary(&[0; 4096]), None);
        assert_eq!(tracker.payload_left, u64::MAX - 8192);

        let mut header = vec![0x82, 0x7f];
        header.extend_from_slice(&(1u64 << 63).to_be_bytes());
        let mut tracker = FrameTracker::default();
        tracker.advance(&header);
        assert_eq!(tracker.payload_left, 1 << 63);
    }

    #[test]
    fn notices_a_close_frame_going_by() {
        let mut tracker = FrameTracker::default();
        tracker.advance(&frame(0x1, 3, true));
        assert!(!tracker.close_seen());
        tracker.advance(&close_frame(1000, "bye", Some([7, 7, 7, 7])));
        assert!(tracker.close_seen());
        assert!(tracker.at_boundary());
    }

    #[test]
    fn close_frames_carry_code_and_reason_masked_or_not() {
        assert_eq!(
            close_frame(1001, "going away", None)[..4],
            [0x88, 12, 0x03, 0xe9]
        );
        let masked = close_frame(1008, "x", Some([1, 2, 3, 4]));
        assert_eq!(masked[..6], [0x88, 0x80 | 3, 1, 2, 3, 4]);
        let unmasked: Vec<u8> = masked[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ [1, 2, 3, 4][i % 4])
            .collect();
        assert_eq!(unmasked, [0x03, 0xf0, b'x']);
        let long = "é".repeat(100);
        let frame = close_frame(1001, &long, None);
        assert!(frame.len() - 2 <= 125);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }
}
