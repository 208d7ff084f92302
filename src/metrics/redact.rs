//! Query strings as they may be logged: the values of parameters that carry
//! credentials (login codes, tokens, secrets, passwords) replaced by `REDACTED`.

use std::borrow::Cow;

/// What a redacted value is replaced with.
pub const REDACTED: &str = "REDACTED";

/// Parameter names whose values are always redacted (compared without case).
const SENSITIVE_NAMES: &[&str] = &[
    "auth_code",
    "code",
    "state",
    "nonce",
    "code_verifier",
    "session",
    "sessionid",
    "jwt",
    "key",
    "apikey",
    "api_key",
    "sig",
    "signature",
    "assertion",
    "ticket",
];

/// Parts of names that mark a credential wherever they appear (`access_token`,
/// `client_secret`, `x-amz-credential`...), compared without case.
const SENSITIVE_PARTS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "credential",
    "auth",
];

/// `path?query` with the values of sensitive query parameters replaced by `REDACTED`.
/// Borrowed when there is nothing to redact.
pub fn path_and_query(path_and_query: &str) -> Cow<'_, str> {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return Cow::Borrowed(path_and_query);
    };
    if !query.split('&').any(|pair| is_sensitive(name_of(pair))) {
        return Cow::Borrowed(path_and_query);
    }
    let mut out = String::with_capacity(path_and_query.len());
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let name = name_of(pair);
        if is_sensitive(name) {
            out.push_str(name);
            out.push('=');
            out.push_str(REDACTED);
        } else {
            out.push_str(pair);
        }
    }
    Cow::Owned(out)
}

fn name_of(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(name, _)| name)
}

/// Whether a (raw, possibly percent-encoded) parameter name names a credential.
fn is_sensitive(raw_name: &str) -> bool {
    // Decoded and lower-cased so that `Access%5FToken` is caught like `access_token`.
    let name = percent_decode_lower(raw_name);
    SENSITIVE_NAMES.contains(&name.as_str())
        || SENSITIVE_PARTS.iter().any(|part| name.contains(part))
}

fn percent_decode_lower(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'%' => bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok()),
            _ => None,
        };
        match decoded {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials_and_keeps_the_rest() {
        assert_eq!(path_and_query("/a/b"), "/a/b");
        assert!(matches!(path_and_query("/a?page=2&q=x"), Cow::Borrowed(_)));
        assert_eq!(
            path_and_query("/cb?code=abc&state=def&x=1"),
            "/cb?code=REDACTED&state=REDACTED&x=1"
        );
        assert_eq!(path_and_query("/?auth_code=s3cr3t"), "/?auth_code=REDACTED");
        assert_eq!(
            path_and_query(
                "/x?Access%5FToken=t&id_token=i&refresh_token=r&client_secret=c&password=p&flag"
            ),
            "/x?Access%5FToken=REDACTED&id_token=REDACTED&refresh_token=REDACTED&client_secret=REDACTED&password=REDACTED&flag"
        );
        assert_eq!(path_and_query("/x?token"), "/x?token=REDACTED");
        assert_eq!(path_and_query("/x?codename=a"), "/x?codename=a");
    }
}
