//! Reading the few header values that decide framing, byte for byte as hyper reads
//! them (its `HeaderValue::to_str`, `str::trim` and digit rules), shared by requests and
//! responses.

/// Whether the last coding in a `Transfer-Encoding` value is `chunked` (a value that is
/// not visible ASCII has none).
pub(super) fn ends_in_chunked(value: &[u8]) -> bool {
    if !is_visible(value) {
        return false;
    }
    let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
    trim(last).eq_ignore_ascii_case(b"chunked")
}

/// Whether a comma-separated list (`Connection`) holds `token`, in any case (a value
/// that is not visible ASCII holds none).
pub(super) fn has_token(value: &[u8], token: &[u8]) -> bool {
    is_visible(value)
        && value
            .split(|&b| b == b',')
            .any(|item| trim(item).eq_ignore_ascii_case(token))
}

/// Visible ASCII, spaces and tabs: what `HeaderValue::to_str` accepts.
pub(super) fn is_visible(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
}

pub(super) fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |end| end + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// Plain decimal digits, nothing else (no sign, no space, no list), as a `u64`.
pub(super) fn from_digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |total, &b| {
        if b.is_ascii_digit() {
            total.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}
