//! The committed JSON Schema (`schema/fluxlit.schema.json`), and what it says about the
//! text of a config file, as an editor's schema validator would.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// A file of the repository, by its path from the root.
pub fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A validator for the committed schema.
pub fn validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(repo_file("schema/fluxlit.schema.json"))
        .expect("schema/fluxlit.schema.json");
    let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
    jsonschema::validator_for(&schema).expect("a valid schema")
}

/// What `validator` finds wrong with the config `text` (TOML), each with its place.
pub fn schema_errors(validator: &jsonschema::Validator, text: &str) -> Vec<String> {
    let value: toml::Value = toml::from_str(text).expect("TOML");
    let instance = serde_json::to_value(value).expect("as JSON");
    validator
        .iter_errors(&instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}
