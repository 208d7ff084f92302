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
}

/// Resolves `.` and `..` segments (also percent-encoded, as `%2e`), so that
/// `/public/../api` is routed, and forwarded, as `/api`. Paths without dot segments
/// (almost all of them) are returned as they are, without allocating.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, BadPath> {
    if !path.starts_with('/') {
        return Err(BadPath::NotOriginForm);
    }
    if !path.split('/').any(is_dot_segment) {
        return Ok(Cow::Borrowed(path));
    }
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = path[1..].split('/').peekable();
    let mut ends_with_slash = false;
    while let Some(segment) = parts.next() {
        let last = parts.peek().is_none();
        match dot_kind(segment) {
            Some(Dot::Current) => ends_with_slash = last,
            Some(Dot::Parent) => {
                segments.pop().ok_or(BadPath::EscapesRoot)?;
                ends_with_slash = last;
            }
            None => {
                segments.push(segment);
                ends_with_slash = false;
            }
        }
    }
    let mut normalized = String::with_capacity(path.len());
    for segment in &segments {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if ends_with_slash || normalized.is_empty() {
        normalized.push('/');
    }
    Ok(Cow::Owned(normalized))
}

enum Dot {
    Current,
    Parent,
}

fn is_dot_segment(segment: &str) -> bool {
    dot_kind(segment).is_some()
}

fn dot_kind(segment: &str) -> Option<Dot> {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3
            && rest[0] == b'%'
            && rest[1] == b'2'
            && matches!(rest[2], b'e' | b'E')
        {
            rest = &rest[3..];
        } else {
            return None;
        }
        dots += 1;
    }
    match dots {
        1 => Some(Dot::Current),
        2 => Some(Dot::Parent),
        _ => None,
    }
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
        assert_eq!(normalize_path("/public/../api/x").unwrap(), "/api/x");
        assert_eq!(normalize_path("/public/%2e%2E/api").unwrap(), "/api");
        assert_eq!(normalize_path("/a/./b/").unwrap(), "/a/b/");
        assert_eq!(normalize_path("/a/..").unwrap(), "/");
        assert_eq!(normalize_path("/a/...").unwrap(), "/a/...");
        assert_eq!(normalize_path("/..").unwrap_err(), BadPath::EscapesRoot);
        assert_eq!(normalize_path("*").unwrap_err(), BadPath::NotOriginForm);
    }
}
