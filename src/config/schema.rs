//! The JSON Schema of `fluxlit.toml`, generated from the model's Rust types.
//!
//! `schema/fluxlit.schema.json` in the repository is this output, committed so editors
//! (Even Better TOML, taplo) validate and complete the file as it is typed.

use std::sync::OnceLock;

use serde_json::Value;

use super::model::Config;

/// The schema as a JSON value.
pub fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| schemars::schema_for!(Config).to_value())
}

/// The schema as `fluxlit schema` prints it and the repository stores it.
pub fn to_pretty_json() -> String {
    // Serialising a `Value` to a string cannot fail.
    let mut text = serde_json::to_string_pretty(schema()).unwrap_or_default();
    text.push('\n');
    text
}

/// The keys the schema allows in the table at `table_path` (`""`, `server`,
/// `routes[0]`, `upstreams.api`), for "did you mean" hints.
pub fn known_keys(table_path: &str) -> Vec<String> {
    let root = schema();
    let mut node = resolve(root, root);
    for component in path_components(table_path) {
        let next = match component {
            Component::Key(key) => node
                .get("properties")
                .and_then(|properties| properties.get(key))
                .or_else(|| node.get("additionalProperties").filter(|v| v.is_object())),
            Component::Index => node.get("items"),
        };
        match next {
            Some(next) => node = resolve(root, next),
            None => return Vec::new(),
        }
    }
    node.get("properties")
        .and_then(Value::as_object)
        .map(|properties| properties.keys().cloned().collect())
        .unwrap_or_default()
}

enum Component<'a> {
    Key(&'a str),
    Index,
}

fn path_components(path: &str) -> impl Iterator<Item = Component<'_>> {
    path.split('.')
        .filter(|part| !part.is_empty())
        .flat_map(|part| {
            let (key, indexes) = part.split_once('[').unwrap_or((part, ""));
            std::iter::once(Component::Key(key)).chain(
                indexes
                    .split('[')
                    .filter(|i| !i.is_empty())
                    .map(|_| Component::Index),
            )
        })
}

/// Follows `$ref`s and picks the object branch of `Option<T>`'s `anyOf`.
fn resolve<'a>(root: &'a Value, mut node: &'a Value) -> &'a Value {
    for _ in 0..8 {
        if let Some(reference) = node.get("$ref").and_then(Value::as_str) {
            let pointer = reference.trim_start_matches('#');
            match root.pointer(pointer) {
                Some(target) => node = target,
                None => return node,
            }
        } else if let Some(branches) = node.get("anyOf").and_then(Value::as_array) {
            match branches
                .iter()
                .find(|b| b.get("type") != Some(&Value::from("null")))
            {
                Some(branch) => node = branch,
                None => return node,
            }
        } else {
            return node;
        }
    }
    node
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_the_keys_of_nested_tables() {
        assert!(known_keys("").contains(&"routes".to_owned()));
        assert!(known_keys("server").contains(&"listen".to_owned()));
        assert!(known_keys("admin").contains(&"listen".to_owned()));
        assert!(known_keys("routes[3]").contains(&"path_prefix".to_owned()));
        assert!(known_keys("upstreams.api").contains(&"connect_timeout".to_owned()));
        assert!(known_keys("no.such.table").is_empty());
    }
}
