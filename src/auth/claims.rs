//! The claims of a verified token, and what the gateway reads from them.

use serde_json::{Map, Value};

/// The verified claims of a token (or of an id_token).
pub type Claims = Map<String, Value>;

/// Scopes from `scope` (space-separated) or `scp` (a list or a string).
pub fn scopes(claims: &Claims) -> Vec<String> {
    let split = |text: &str| {
        text.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    match claims.get("scope").or_else(|| claims.get("scp")) {
        Some(Value::String(text)) => split(text),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}
