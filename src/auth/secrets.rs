//! Secrets named in the config (`{ env = "NAME" }` or `{ file = "path" }`), resolved at
//! compile time. The environment is a parameter, so tests never touch the real one.

use std::fmt;
use std::path::Path;

use crate::config::model::SecretRef;

/// Where environment variables come from.
pub trait Environment: Send + Sync + fmt::Debug {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// A secret's bytes. Never printed: `Debug` says only how long it is.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes({} bytes, redacted)", self.0.len())
    }
}

/// Reads the secret. File paths are relative to `config_dir`; one trailing newline (as
/// `echo` and Kubernetes secrets leave) is dropped.
pub fn resolve(
    secret: &SecretRef,
    config_dir: &Path,
    env: &dyn Environment,
) -> Result<SecretBytes, String> {
    let bytes = match (&secret.env, &secret.file) {
        (Some(name), None) => env
            .var(name)
            .ok_or_else(|| format!("environment variable {name} is not set"))?
            .into_bytes(),
        (None, Some(file)) => {
            let path = config_dir.join(file);
            let mut bytes = std::fs::read(&path)
                .map_err(|err| format!("cannot read secret file {}: {err}", path.display()))?;
            if bytes.ends_with(b"\n") {
                bytes.pop();
                if bytes.ends_with(b"\r") {
                    bytes.pop();
                }
            }
            bytes
        }
        _ => return Err("give exactly one of `env` or `file`".to_owned()),
    };
    if bytes.is_empty() {
        return Err("the secret is empty".to_owned());
    }
    Ok(SecretBytes(bytes))
}
