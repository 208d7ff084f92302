//! Route matching: longest path prefix on segment boundaries, and the path
//! normalisation that runs before it.
//!
//! The table is a hash map from normalised prefix to route, built once per snapshot.
//! A lookup tries the request path and then each of its ancestors (`/a/b/c`, `/a/b`,
//! `/a`, `/`), skipping those longer than the longest prefix, so its cost grows with
//! the depth of the path, not with the number of routes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// Routes by prefix. `R` is the compiled route; the table only knows prefixes.
#[derive(Debug)]
pub struct RouteTable<R> {
    routes: Vec<Arc<R>>,
    by_prefix: HashMap<Box<str>, usize>,
    longest_prefix: usize,
}

impl<R> RouteTable<R> {
    /// Builds the table from `(normalised prefix, route)` pairs. Prefixes are unique
    /// (validation refuses duplicates); a later duplicate would replace an earlier one.
    pub fn new(entries: impl IntoIterator<Item = (String, Arc<R>)>) -> Self {
        let mut table = Self {
            routes: Vec::new(),
            by_prefix: HashMap::new(),
            longest_prefix: 0,
        };
        for (prefix, route) in entries {
            table.longest_prefix = table.longest_prefix.max(prefix.len());
            table
                .by_prefix
                .insert(prefix.into_boxed_str(), table.routes.len());
            table.routes.push(route);
        }
        table
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn routes(&self) -> impl Iterator<Item = &Arc<R>> {
        self.routes.iter()
    }

    /// The route with the longest prefix matching `path` on a segment boundary.
    /// `path` must be normalised (see [`normalize_path`]).
    pub fn find(&self, path: &str) -> Option<&Arc<R>> {
        let mut end = path.trim_end_matches('/').len().max(1);
        loop {
            let candidate = path.get(..end)?;
            if end <= self.longest_prefix
                && let Some(&index) = self.by_prefix.get(candidate)
            {
                return self.routes.get(index);
            }
            if end <= 1 {
                return None;
            }
            end = match candidate.rfind('/') {
                Some(0) | None => 1,
                Some(slash) => slash,
            };
        }
    }
}

/// Why a request path cannot be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadPath {
    #[error("the path must start with '/'")]
    NotOriginForm,
    #[error("the path climbs above the root with '..'")]
    EscapesRoot,
    #[error("the path holds an encoded '/' or '\\', which upstreams read differently")]
    EncodedSeparator,
    #[error("the path holds a backslash")]
    Backslash,
    #[error("the path holds an encoded control character")]
    EncodedControl,
    #[error("the path holds a malformed percent-encoding")]
    MalformedEncoding,
}

/// The path as routes see it and the upstream receives it, so that a route's check
/// cannot be dodged by spelling its prefix differently:
///
/// - percent-encoded unreserved characters are decoded (`/%61pi` is `/api`,
///   RFC 3986 §6.2.2.2); other encodings are kept as sent;
/// - empty segments are merged (`//api` is `/api`);
/// - `.` and `..` segments are resolved (`/public/../api` is `/api`);
/// - an encoded `/` or `\`, a backslash, an encoded control character, a malformed
///   encoding or a `..` above the root is refused (400).
///
/// Paths with none of these (almost all of them) are returned as they are, without
/// allocating.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, BadPath> {
    if !path.starts_with('/') {
        return Err(BadPath::NotOriginForm);
    }
    let needs_work = path.bytes().any(|b| b == b'%' || b == b'\\')
        || path.contains("//")
        || path
            .split('/')
            .any(|segment| segment == "." || segment == "..");
    if !needs_work {
        return Ok(Cow::Borrowed(path));
    }
    if path.contains('\\') {
        return Err(BadPath::Backslash);
    }
    let decoded = decode_unreserved(path)?;

    let mut segments: Vec<&str> = Vec::new();
    let mut ends_with_slash = false;
    for segment in decoded[1..].split('/') {
        match segment {
            "" | "." => ends_with_slash = true,
            ".." => {
                segments.pop().ok_or(BadPath::EscapesRoot)?;
                ends_with_slash = true;
            }
            segment => {
                segments.push(segment);
                ends_with_slash = false;
            }
        }
    }
    let mut normalized = String::with_capacity(decoded.len());
    for segment in &segments {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if ends_with_slash || normalized.is_empty() {
        normalized.push('/');
    }
    Ok(Cow::Owned(normalized))
}

fn decode_unreserved(path: &str) -> Result<String, BadPath> {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    // Text between escapes is copied as `str`, so UTF-8 in a path stays UTF-8.
    while let Some(percent) = rest.find('%') {
        out.push_str(&rest[..percent]);
        let hex = rest
            .get(percent + 1..percent + 3)
            .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or(BadPath::MalformedEncoding)?;
        let value = u8::from_str_radix(hex, 16).map_err(|_| BadPath::MalformedEncoding)?;
        match value {
            b'/' | b'\\' => return Err(BadPath::EncodedSeparator),
            0..=0x1f | 0x7f => return Err(BadPath::EncodedControl),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(value));
            }
            _ => {
                out.push('%');
                out.push_str(&hex.to_ascii_uppercase());
            }
        }
        rest = &rest[percent + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(prefixes: &[&str]) -> RouteTable<String> {
        RouteTable::new(
            prefixes
                .iter()
                .map(|p| (p.to_string(), Arc::new(p.to_string()))),
        )
    }

    fn find<'a>(table: &'a RouteTable<String>, path: &str) -> Option<&'a str> {
        table.find(path).map(|r| r.as_str())
    }

    #[test]
    fn matches_on_segment_boundaries_longest_first() {
        let t = table(&["/", "/api", "/api/v2"]);
        assert_eq!(find(&t, "/api"), Some("/api"));
        assert_eq!(find(&t, "/api/"), Some("/api"));
        assert_eq!(find(&t, "/api/x"), Some("/api"));
        assert_eq!(find(&t, "/apix"), Some("/"));
        assert_eq!(find(&t, "/api/v2/users"), Some("/api/v2"));
        assert_eq!(find(&t, "/api/v20"), Some("/api"));
        assert_eq!(find(&t, "/"), Some("/"));
    }

    #[test]
    fn without_a_root_route_unmatched_paths_find_nothing() {
        let t = table(&["/api"]);
        assert_eq!(find(&t, "/"), None);
        assert_eq!(find(&t, "/apix"), None);
        assert_eq!(find(&t, "/other/api"), None);
    }

    #[test]
    fn resolves_dot_segments() {
        assert_eq!(normalize_path("/a/b").unwrap(), "/a/b");
        assert!(matches!(normalize_path("/a/b?").unwrap(), Cow::Borrowed(_)));
        assert_eq!(normalize_path("/public/../api/x").unwrap(), "/api/x");
        assert_eq!(normalize_path("/public/%2e%2E/api").unwrap(), "/api");
        assert_eq!(normalize_path("/a/./b/").unwrap(), "/a/b/");
        assert_eq!(normalize_path("/a/..").unwrap(), "/");
        assert_eq!(normalize_path("/a/...").unwrap(), "/a/...");
        assert_eq!(normalize_path("/..").unwrap_err(), BadPath::EscapesRoot);
        assert_eq!(normalize_path("*").unwrap_err(), BadPath::NotOriginForm);
    }

    #[test]
    fn decodes_unreserved_characters_and_merges_slashes() {
        assert_eq!(normalize_path("/%61pi/x").unwrap(), "/api/x");
        assert_eq!(normalize_path("//api//x").unwrap(), "/api/x");
        assert_eq!(
            normalize_path("/api/a%20b%c3%a9").unwrap(),
            "/api/a%20b%C3%A9"
        );
        assert_eq!(normalize_path("/").unwrap(), "/");
    }

    #[test]
    fn utf8_in_a_path_that_needs_decoding_stays_utf8() {
        // Found by the path_routing fuzz target: bytes were pushed as Latin-1 chars.
        assert_eq!(
            normalize_path("/caf%C3%A9/é/%41").unwrap(),
            "/caf%C3%A9/é/A"
        );
        assert_eq!(normalize_path("/a//🍕/./b").unwrap(), "/a/🍕/b");
        let once = normalize_path("/%82\u{7f}</2p/=Â«/-/")
            .unwrap()
            .into_owned();
        assert_eq!(normalize_path(&once).unwrap(), once);
        assert_eq!(
            normalize_path("/a%+1").unwrap_err(),
            BadPath::MalformedEncoding
        );
        assert_eq!(
            normalize_path("/a%é").unwrap_err(),
            BadPath::MalformedEncoding
        );
    }

    #[test]
    fn refuses_what_upstreams_read_differently() {
        assert_eq!(
            normalize_path("/api%2fx").unwrap_err(),
            BadPath::EncodedSeparator
        );
        assert_eq!(
            normalize_path("/api%5Cx").unwrap_err(),
            BadPath::EncodedSeparator
        );
        assert_eq!(normalize_path("/api\\x").unwrap_err(), BadPath::Backslash);
        assert_eq!(
            normalize_path("/api%00").unwrap_err(),
            BadPath::EncodedControl
        );
        assert_eq!(
            normalize_path("/api%zz").unwrap_err(),
            BadPath::MalformedEncoding
        );
        assert_eq!(
            normalize_path("/api%2").unwrap_err(),
            BadPath::MalformedEncoding
        );
    }
}
