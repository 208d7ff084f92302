//! Path normalisation, then `RouteTable::find` against a few prefixes: a normalised path
//! is in the canonical form and stays put when normalised again, and the route found is
//! the longest prefix that matches on a segment boundary (checked against a naive scan).
#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use fluxlit::proxy::routes::{RouteTable, normalize_path};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Route prefixes; each is made into a valid one (leading `/`, no trailing `/`).
    prefixes: Vec<String>,
    path: String,
}

/// A prefix as validation accepts and compile stores it, or none.
fn prefix(text: &str) -> Option<String> {
    let normal = normalize_path(text).ok()?;
    let trimmed = normal.trim_end_matches('/');
    Some(if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    })
}

fn naive<'a>(prefixes: &'a [String], path: &str) -> Option<&'a str> {
    prefixes
        .iter()
        .filter(|p| {
            p.as_str() == "/"
                || path == p.as_str()
                || path
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|p| p.len())
        .map(String::as_str)
}

fuzz_target!(|input: Input| {
    let mut prefixes: Vec<String> = Vec::new();
    for text in input.prefixes.iter().take(16) {
        if let Some(p) = prefix(text)
            && !prefixes.contains(&p)
        {
            prefixes.push(p);
        }
    }
    let Ok(path) = normalize_path(&input.path) else {
        return;
    };
    assert!(path.starts_with('/'), "{path:?}");
    if path.contains(['%', '\\'])
        || path.contains("//")
        || path.split('/').any(|s| s == "." || s == "..")
    {
        // Encodings other than unreserved characters stay, but only in canonical form.
        assert!(
            !path.contains('\\') && !path.contains("//"),
            "{:?} -> {path:?}",
            input.path
        );
        assert!(
            !path.split('/').any(|s| s == "." || s == ".."),
            "{:?} -> {path:?}",
            input.path
        );
    }
    match normalize_path(&path) {
        Ok(again) => assert_eq!(again, path, "normalising is not idempotent"),
        Err(err) => panic!("a normalised path {path:?} is refused: {err}"),
    }

    let table = RouteTable::new(prefixes.iter().map(|p| (p.clone(), Arc::new(p.clone()))));
    let found = table.find(&path).map(|r| r.as_str());
    assert_eq!(
        found,
        naive(&prefixes, &path),
        "path {path:?}, prefixes {prefixes:?}"
    );
});
