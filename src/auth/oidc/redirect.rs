//! The `next` parameter of login and logout: where the user goes afterwards.
//!
//! Only a same-origin path is kept; anything else becomes `/`, so the login cannot be
//! used as an open redirect. A kept `next`:
//!
//! - starts with one `/`, not `//` or `/\` (which browsers read as another host);
//! - holds only the characters of a URI path and query (RFC 3986: unreserved,
//!   sub-delims, `:`, `@`, `/`, `?`, and `%XX` escapes): no scheme can appear at the
//!   start, and no backslash, space, control character, `#` or non-ASCII byte anywhere;
//! - has no escaped control character (`%00`-`%1F`, `%7F`) anywhere, and no escaped `/`
//!   or `\` (`%2F`, `%5C`) in its path, which some servers decode into `//host`;
//! - has no dot segment in its path: no `.` or `..`, however spelled (`%2e`, `%2E`,
//!   mixed, escaped twice, with `;params` after it), so it cannot climb out of the path
//!   of `server.public_base_url` onto another app of the same host;
//! - resolved under that path as a browser resolves it (RFC 3986 §5.2.4), stays under it;
//! - is at most [`MAX_NEXT_LEN`] bytes.
//!
//! `next` is a path as the gateway receives it; the redirect puts the path of
//! `server.public_base_url` in front of it.

use url::Url;

/// The longest `next` kept.
pub const MAX_NEXT_LEN: usize = 2048;

/// How many times a path segment is percent-decoded when looking for a dot segment: a
/// server behind may decode once more than the browser did.
const DECODE_ROUNDS: usize = 3;

/// `next` when it is a safe same-origin path under `base` (the path of
/// `public_base_url` without its trailing `/`, empty for `/`), else `/` (which the
/// redirect puts under `base`).
pub fn safe_next<'a>(base: &str, next: Option<&'a str>) -> &'a str {
    match next {
        Some(next) if is_safe(next) && stays_under(base, next) => next,
        _ => "/",
    }
}

/// Whether `base` followed by `next`, resolved as a browser resolves a path (dot
/// segments, `%2e` among them, removed), is still `base` or below it. [`is_safe`] has
/// refused dot segments already; this holds on its own, whatever a later change lets
/// through.
fn stays_under(base: &str, next: &str) -> bool {
    let Ok(origin) = Url::parse("http://fluxlit.invalid/") else {
        return false;
    };
    let Ok(resolved) = origin.join(&location(base, next, None)) else {
        return false;
    };
    resolved.origin() == origin.origin()
        && resolved
            .path()
            .strip_prefix(base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether a path segment (as written, `;params` included) is, or may be read as, `.`
/// or `..`: escapes of any case decoded up to [`DECODE_ROUNDS`] times, the parameters
/// some servers strip (`..;x` is `..` to them) ignored. A segment that decodes to bytes
/// that are not UTF-8 (`%c0%ae` is an overlong `.` to old decoders), or that would
/// still decode further after the last round, is counted as one rather than guessed
/// about.
fn may_be_dot_segment(segment: &str) -> bool {
    let mut text = segment.to_owned();
    for round in 0..=DECODE_ROUNDS {
        let bare = text.split(';').next().unwrap_or_default();
        if bare == "." || bare == ".." {
            return true;
        }
        if !text.contains('%') {
            return false;
        }
        let decoded = percent_decode(text.as_bytes());
        if decoded == text.as_bytes() {
            return false;
        }
        if round == DECODE_ROUNDS {
            return true;
        }
        match String::from_utf8(decoded) {
            Ok(decoded) => text = decoded,
            Err(_) => return true,
        }
    }
    true
}

/// `%XX` escapes decoded; a `%` that starts none is kept.
fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = bytes
            .get(index + 1..index + 3)
            .filter(|_| bytes[index] == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                index += 3;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    out
}

fn is_safe(next: &str) -> bool {
    let bytes = next.as_bytes();
    if bytes.len() > MAX_NEXT_LEN || bytes.first() != Some(&b'/') {
        return false;
    }
    if matches!(bytes.get(1), Some(b'/' | b'\\')) {
        return false;
    }
    let mut in_query = false;
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        match byte {
            b'?' => in_query = true,
            b'%' => {
                let Some(decoded) = bytes
                    .get(index + 1..index + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                else {
                    return false;
                };
                if decoded.is_ascii_control() || (!in_query && matches!(decoded, b'/' | b'\\')) {
                    return false;
                }
                index += 3;
                continue;
            }
            _ if is_path_char(byte) => {}
            _ => return false,
        }
        index += 1;
    }
    let path = next.split('?').next().unwrap_or_default();
    !path.split('/').any(may_be_dot_segment)
}

/// RFC 3986 `pchar` without `%` (handled apart), plus `/`.
fn is_path_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
        )
}

/// `base` (the path of `public_base_url`, without its trailing `/`) and `next`, with
/// `name=value` added to the query (`value` must be URL-safe already).
pub fn location(base: &str, next: &str, param: Option<(&str, &str)>) -> String {
    let mut out = String::with_capacity(base.len() + next.len() + 80);
    out.push_str(base);
    out.push_str(next);
    if let Some((name, value)) = param {
        out.push(if next.contains('?') { '&' } else { '?' });
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_paths_are_kept() {
        for next in [
            "/",
            "/dashboard",
            "/a/b?tab=1&x=%20y",
            "/search?q=a%2Fb",
            "/~user/page.html",
            "/x:y@z",
            "/...",
            "/a..b/.c/d./..e",
            "/x?next=/../y",
            "/100%25",
            "/a%2e",
            "/%2e%2e%2e",
            "/x;a=1",
        ] {
            assert_eq!(safe_next("", Some(next)), next, "{next:?}");
            assert_eq!(safe_next("/app", Some(next)), next, "{next:?}");
        }
    }

    #[test]
    fn dot_segments_however_spelled_fall_back_to_the_root() {
        for next in [
            "/..",
            "/.",
            "/../x",
            "/./x",
            "/a/../../x",
            "/a/..",
            "/a/./b",
            "/%2e%2e/x",
            "/%2E%2E/x",
            "/%2e%2E/x",
            "/.%2e/x",
            "/%2e./x",
            "/%2e/x",
            "/a/%2E",
            "/..;/x",
            "/..;a=b/x",
            "/%2e%2e;/x",
            "/%2e%2e%3b/x",
            "/%252e%252e/x",
            "/%25252e%25252e/x",
            "/%2525252e%2525252e/x",
            "/%c0%ae%c0%ae/x",
            "/x/..?a=b",
        ] {
            assert_eq!(safe_next("", Some(next)), "/", "{next:?}");
            assert_eq!(safe_next("/app", Some(next)), "/", "{next:?}");
        }
    }

    #[test]
    fn a_kept_next_resolves_under_the_base_path() {
        for (base, next, kept) in [
            ("/app", "/x", true),
            ("/app", "/", true),
            ("", "/x", true),
            ("/app", "/../other", false),
            ("/app", "/%2e%2e/other", false),
        ] {
            assert_eq!(stays_under(base, next), kept, "{base:?} {next:?}");
        }
    }

    #[test]
    fn everything_else_falls_back_to_the_root() {
        for next in [
            "",
            "dashboard",
            "//evil.com",
            "///evil.com",
            "/\\evil.com",
            "\\/evil.com",
            "\\\\evil.com",
            "https://evil.com",
            "http:/evil.com",
            "javascript:alert(1)",
            "JAVASCRIPT:alert(1)",
            " /x",
            "/%2F%2Fevil.com",
            "/%2f/evil.com",
            "/%5Cevil.com",
            "/x%0d%0aSet-Cookie:a=b",
            "/x?a=%0A",
            "/x\r\nSet-Cookie: a=b",
            "/\tevil",
            "/x y",
            "/x#frag",
            "/caf\u{e9}",
            "/%zz",
            "/%4",
            "/\u{0}",
        ] {
            assert_eq!(safe_next("", Some(next)), "/", "{next:?}");
        }
        assert_eq!(safe_next("", None), "/");
        assert_eq!(
            safe_next("", Some(&format!("/{}", "a".repeat(MAX_NEXT_LEN)))),
            "/"
        );
        let longest = format!("/{}", "a".repeat(MAX_NEXT_LEN - 1));
        assert_eq!(safe_next("", Some(&longest)), longest);
    }

    #[test]
    fn locations_carry_the_base_path_and_the_parameter() {
        assert_eq!(location("", "/", None), "/");
        assert_eq!(
            location("/app", "/x", Some(("auth_code", "c"))),
            "/app/x?auth_code=c"
        );
        assert_eq!(
            location("", "/x?a=1", Some(("auth_code", "c"))),
            "/x?a=1&auth_code=c"
        );
    }
}
