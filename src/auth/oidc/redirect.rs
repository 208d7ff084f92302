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
//! - is at most [`MAX_NEXT_LEN`] bytes.
//!
//! `next` is a path as the gateway receives it; the redirect puts the path of
//! `server.public_base_url` in front of it.

/// The longest `next` kept.
pub const MAX_NEXT_LEN: usize = 2048;

/// `next` when it is a safe same-origin path, else `/`.
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(next) if is_safe(next) => next,
        _ => "/",
    }
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
    true
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
            "/..",
        ] {
            assert_eq!(safe_next(Some(next)), next, "{next:?}");
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
            assert_eq!(safe_next(Some(next)), "/", "{next:?}");
        }
        assert_eq!(safe_next(None), "/");
        assert_eq!(
            safe_next(Some(&format!("/{}", "a".repeat(MAX_NEXT_LEN)))),
            "/"
        );
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
