//! One access line, written by hand into a byte buffer: the text and JSON shapes the
//! `tracing` subscriber gave these events before, so a collector parses them as it did,
//! without the per-event field machinery (no visitor, no allocation, no `fmt` call for
//! the common IPv4 peer).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// What one request's access line says.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    pub method: &'a str,
    /// The path and query, credentials already redacted.
    pub path: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub duration: Duration,
    /// Response body bytes sent.
    pub bytes: u64,
    /// `-` when there is none.
    pub request_id: &'a str,
    pub peer: SocketAddr,
}

/// The shape of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `2026-12-06T10:11:12.123456Z  INFO fluxlit::access: request method=GET ...`
    Text,
    /// `{"timestamp":"...","level":"INFO","fields":{"message":"request",...},"target":"fluxlit::access"}`
    Json,
}

/// A thread's `YYYY-MM-DDTHH:MM:SS.` for the second it last wrote a line in: the date is
/// worked out once a second, not once a line.
#[derive(Debug, Default)]
pub(super) struct Clock {
    second: Option<u64>,
    prefix: [u8; 20],
}

impl Clock {
    /// `now` as RFC 3339 UTC with microseconds, as `tracing-subscriber` writes it.
    fn write(&mut self, now: SystemTime, out: &mut Vec<u8>) {
        let since_epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let second = since_epoch.as_secs();
        if self.second != Some(second) {
            self.prefix = date_time_prefix(second);
            self.second = Some(second);
        }
        out.extend_from_slice(&self.prefix);
        push_padded(out, u64::from(since_epoch.subsec_micros()), 6);
        out.push(b'Z');
    }
}

impl Line<'_> {
    /// Appends the line, newline included, to `out`.
    pub(super) fn write(
        &self,
        format: Format,
        clock: &mut Clock,
        now: SystemTime,
        out: &mut Vec<u8>,
    ) {
        // Room for the whole line at once: the fixed text and numbers take under 250
        // bytes, and escaping can at most double a value (a JSON `\u00XX` is 6 bytes
        // for 1, but such a value is exceptional and may grow the buffer once).
        out.reserve(
            256 + 2 * (self.method.len() + self.path.len() + self.route.len())
                + 2 * self.request_id.len(),
        );
        match format {
            Format::Text => self.write_text(clock, now, out),
            Format::Json => self.write_json(clock, now, out),
        }
    }

    fn write_text(&self, clock: &mut Clock, now: SystemTime, out: &mut Vec<u8>) {
        clock.write(now, out);
        out.extend_from_slice(b"  INFO fluxlit::access: request method=");
        push_text(out, self.method);
        out.extend_from_slice(b" path=");
        push_text(out, self.path);
        out.extend_from_slice(b" route=");
        push_text(out, self.route);
        out.extend_from_slice(b" status=");
        push_u64(out, u64::from(self.status));
        out.extend_from_slice(b" duration_ms=");
        push_millis(out, self.duration);
        out.extend_from_slice(b" bytes=");
        push_u64(out, self.bytes);
        // Quoted, as `tracing` writes a string field.
        out.extend_from_slice(b" request_id=\"");
        push_quoted(out, self.request_id);
        out.extend_from_slice(b"\" peer=");
        push_peer(out, self.peer);
        out.push(b'\n');
    }

    fn write_json(&self, clock: &mut Clock, now: SystemTime, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"timestamp\":\"");
        clock.write(now, out);
        out.extend_from_slice(
            b"\",\"level\":\"INFO\",\"fields\":{\"message\":\"request\",\"method\":\"",
        );
        push_json(out, self.method);
        out.extend_from_slice(b"\",\"path\":\"");
        push_json(out, self.path);
        out.extend_from_slice(b"\",\"route\":\"");
        push_json(out, self.route);
        out.extend_from_slice(b"\",\"status\":");
        push_u64(out, u64::from(self.status));
        out.extend_from_slice(b",\"duration_ms\":");
        push_millis(out, self.duration);
        out.extend_from_slice(b",\"bytes\":");
        push_u64(out, self.bytes);
        out.extend_from_slice(b",\"request_id\":\"");
        push_json(out, self.request_id);
        out.extend_from_slice(b"\",\"peer\":\"");
        push_peer(out, self.peer);
        out.extend_from_slice(b"\"},\"target\":\"fluxlit::access\"}\n");
    }
}

/// "00", "01", ... "99": two digits a step.
const DIGIT_PAIRS: [u8; 200] = {
    let mut pairs = [0_u8; 200];
    let mut i = 0;
    while i < 100 {
        pairs[2 * i] = b'0' + (i / 10) as u8;
        pairs[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    pairs
};

/// `n` in decimal.
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0_u8; 20];
    let mut start = digits.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        start -= 2;
        digits[start..start + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        start -= 2;
        digits[start..start + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        start -= 1;
        digits[start] = b'0' + n as u8;
    }
    out.extend_from_slice(&digits[start..]);
}

/// An IPv4 address's octet in decimal.
fn push_octet(out: &mut Vec<u8>, n: u8) {
    if n >= 100 {
        out.extend_from_slice(&[b'0' + n / 100, b'0' + n / 10 % 10, b'0' + n % 10]);
    } else if n >= 10 {
        out.extend_from_slice(&[b'0' + n / 10, b'0' + n % 10]);
    } else {
        out.push(b'0' + n);
    }
}

/// `n` in decimal, zero-padded to `width` digits (wider if it needs more).
fn push_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    let mut rest = n;
    while rest > 0 {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    start = start.min(digits.len() - width.min(digits.len()));
    out.extend_from_slice(&digits[start..]);
}

/// Milliseconds with whole microseconds and no trailing zeros, as the `f64` the line
/// held before printed: `0.348`, `1.5`, `2.0`.
fn push_millis(out: &mut Vec<u8>, duration: Duration) {
    let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
    push_u64(out, micros / 1000);
    out.push(b'.');
    let fraction = micros % 1000;
    if fraction == 0 {
        out.push(b'0');
        return;
    }
    let digits = [
        b'0' + (fraction / 100) as u8,
        b'0' + (fraction / 10 % 10) as u8,
        b'0' + (fraction % 10) as u8,
    ];
    let len = if digits[2] != b'0' {
        3
    } else if digits[1] != b'0' {
        2
    } else {
        1
    };
    out.extend_from_slice(&digits[..len]);
}

fn push_peer(out: &mut Vec<u8>, peer: SocketAddr) {
    match peer {
        SocketAddr::V4(v4) => {
            let [a, b, c, d] = v4.ip().octets();
            push_octet(out, a);
            out.push(b'.');
            push_octet(out, b);
            out.push(b'.');
            push_octet(out, c);
            out.push(b'.');
            push_octet(out, d);
            out.push(b':');
            push_u64(out, u64::from(v4.port()));
        }
        SocketAddr::V6(v6) => {
            use std::io::Write;
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

/// A value as text: as it is, but control characters escaped as Rust writes them
/// (`\n`, `\u{1b}`), so that no value can start a line of its own or drive a terminal.
fn push_text(out: &mut Vec<u8>, text: &str) {
    push_escaped(out, text, |byte| byte < 0x20 || byte == 0x7f)
}

/// A value inside double quotes: control characters, `"` and `\` escaped, as Rust's
/// `Debug` of a string (what `tracing` writes for a string field).
fn push_quoted(out: &mut Vec<u8>, text: &str) {
    push_escaped(out, text, |byte| {
        byte < 0x20 || byte == 0x7f || byte == b'"' || byte == b'\\'
    })
}

fn push_escaped(out: &mut Vec<u8>, text: &str, needs_escape: impl Fn(u8) -> bool) {
    let bytes = text.as_bytes();
    let mut clean = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        if !needs_escape(byte) {
            continue;
        }
        out.extend_from_slice(&bytes[clean..i]);
        match byte {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\0' => out.extend_from_slice(b"\\0"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            _ => {
                out.extend_from_slice(b"\\u{");
                push_hex(out, byte, false);
                out.push(b'}');
            }
        }
        clean = i + 1;
    }
    out.extend_from_slice(&bytes[clean..]);
}

/// A JSON string's contents, escaped as `serde_json` escapes them.
fn push_json(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let mut clean = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        if byte >= 0x20 && byte != b'"' && byte != b'\\' {
            continue;
        }
        out.extend_from_slice(&bytes[clean..i]);
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                out.extend_from_slice(b"\\u00");
                push_hex(out, byte, true);
            }
        }
        clean = i + 1;
    }
    out.extend_from_slice(&bytes[clean..]);
}

/// `byte` in lower-case hex: two digits, or as few as it needs unless `pad`.
fn push_hex(out: &mut Vec<u8>, byte: u8, pad: bool) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if pad || byte >= 0x10 {
        out.push(HEX[usize::from(byte >> 4)]);
    }
    out.push(HEX[usize::from(byte & 0xf)]);
}

/// `YYYY-MM-DDTHH:MM:SS.` of a Unix time, in UTC (years past 9999 are written 9999).
fn date_time_prefix(unix_seconds: u64) -> [u8; 20] {
    let days = unix_seconds / 86_400;
    let of_day = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut text = Vec::with_capacity(20);
    push_padded(&mut text, year.min(9999), 4);
    text.push(b'-');
    push_padded(&mut text, month, 2);
    text.push(b'-');
    push_padded(&mut text, day, 2);
    text.push(b'T');
    push_padded(&mut text, of_day / 3600, 2);
    text.push(b':');
    push_padded(&mut text, of_day / 60 % 60, 2);
    text.push(b':');
    push_padded(&mut text, of_day % 60, 2);
    text.push(b'.');
    let mut prefix = [b'0'; 20];
    prefix.copy_from_slice(&text[..20]);
    prefix
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(path: &'a str, request_id: &'a str, peer: &str) -> Line<'a> {
        Line {
            method: "GET",
            path,
            route: "ui",
            status: 200,
            duration: Duration::from_micros(348),
            bytes: 1024,
            request_id,
            peer: peer.parse().unwrap(),
        }
    }

    fn written(line: &Line<'_>, format: Format, now: SystemTime) -> String {
        let mut out = Vec::new();
        line.write(format, &mut Clock::default(), now, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn at(seconds: u64, micros: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_micros(micros)
    }

    #[test]
    fn text_lines_read_as_the_tracing_subscriber_wrote_them() {
        // 2026-12-06T07:38:11Z
        let now = at(1_796_542_691, 71_591);
        assert_eq!(
            written(
                &line("/x?code=REDACTED", "a\"b\\c", "127.0.0.1:60240"),
                Format::Text,
                now
            ),
            "2026-12-06T07:38:11.071591Z  INFO fluxlit::access: request method=GET \
             path=/x?code=REDACTED route=ui status=200 duration_ms=0.348 bytes=1024 \
             request_id=\"a\\\"b\\\\c\" peer=127.0.0.1:60240\n"
        );
    }

    #[test]
    fn json_lines_hold_the_fields_the_tracing_subscriber_wrote() {
        let now = at(1_796_542_691, 7);
        let text = written(&line("/a\"b", "id-1", "[::1]:8080"), Format::Json, now);
        assert!(text.ends_with("}\n"), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
        let event: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            event,
            serde_json::json!({
                "timestamp": "2026-12-06T07:38:11.000007Z",
                "level": "INFO",
                "fields": {
                    "message": "request",
                    "method": "GET",
                    "path": "/a\"b",
                    "route": "ui",
                    "status": 200,
                    "duration_ms": 0.348,
                    "bytes": 1024,
                    "request_id": "id-1",
                    "peer": "[::1]:8080",
                },
                "target": "fluxlit::access",
            })
        );
    }

    #[test]
    fn no_value_can_break_a_line() {
        let nasty = "a\nb\r\tc\u{1b}[31m\u{7f}\"\\";
        let mut hostile = line(nasty, nasty, "127.0.0.1:1");
        hostile.route = nasty;
        hostile.method = nasty;
        let now = at(0, 0);
        let text = written(&hostile, Format::Text, now);
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        assert!(!text.contains('\u{1b}') && !text.contains('\r'), "{text}");
        assert!(
            text.contains("path=a\\nb\\r\\tc\\u{1b}[31m\\u{7f}\"\\ "),
            "{text}"
        );
        assert!(
            text.contains("request_id=\"a\\nb\\r\\tc\\u{1b}[31m\\u{7f}\\\"\\\\\""),
            "{text}"
        );
        let json = written(&hostile, Format::Json, now);
        let event: serde_json::Value = serde_json::from_str(&json).unwrap();
        for field in ["method", "path", "route", "request_id"] {
            assert_eq!(event["fields"][field], nasty, "{json}");
        }
        // As serde_json writes it.
        let expected = serde_json::to_string(nasty).unwrap();
        assert!(json.contains(&format!("\"path\":{expected}")), "{json}");
    }

    #[test]
    fn durations_print_as_the_f64_milliseconds_did() {
        for micros in [
            0_u64,
            1,
            10,
            100,
            165,
            348,
            999,
            1000,
            1005,
            1050,
            1500,
            123_456_789,
        ] {
            let mut out = Vec::new();
            push_millis(&mut out, Duration::from_micros(micros));
            let as_f64 = micros as f64 / 1000.0;
            assert_eq!(String::from_utf8(out).unwrap(), format!("{as_f64:?}"));
            assert_eq!(
                serde_json::to_string(&as_f64).unwrap(),
                format!("{as_f64:?}")
            );
        }
        let mut out = Vec::new();
        push_millis(&mut out, Duration::from_nanos(1_999));
        assert_eq!(out, b"0.001", "whole microseconds");
    }

    #[test]
    fn timestamps_match_humantime_across_the_calendar() {
        let mut clock = Clock::default();
        // Leap days, year ends, the turn of the century, far ahead; and every hour of
        // a stretch of days, which steps through months.
        let mut seconds: Vec<u64> = vec![
            0,
            951_782_399,
            951_782_400,
            951_868_800,
            978_307_199,
            1_709_164_800,
            4_107_542_400,
            253_402_300_799,
        ];
        seconds.extend((0..24 * 800).map(|hour| 1_700_000_000 + hour * 3_600 + hour % 60));
        for second in seconds {
            let now = at(second, second % 1_000_000);
            let mut out = Vec::new();
            clock.write(now, &mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                humantime::format_rfc3339_micros(now).to_string(),
                "{second}"
            );
        }
    }

    #[test]
    fn numbers_and_peers_are_written_in_full() {
        for n in [
            0,
            7,
            10,
            99,
            100,
            101,
            999,
            1000,
            65_535,
            1_000_000,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        for octet in 0..=255 {
            let mut out = Vec::new();
            push_octet(&mut out, octet);
            assert_eq!(out, octet.to_string().as_bytes());
        }
        for peer in [
            "255.0.10.1:65535",
            "0.0.0.0:0",
            "127.0.0.1:8080",
            "[::1]:443",
        ] {
            let mut out = Vec::new();
            push_peer(&mut out, peer.parse().unwrap());
            assert_eq!(out, peer.as_bytes());
        }
    }
}
