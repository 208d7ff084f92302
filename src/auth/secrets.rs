//! Secrets named in the config (`{ env = "NAME" }` or `{ file = "path" }`), resolved at
//! compile time. The environment is a parameter, so tests never touch the real one.

use std::fmt;
use std::path::{Path, PathBuf};

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

/// Why a secret cannot be used. Each names the variable or the file; none holds a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {name} is not set")]
    EnvNotSet { name: String },
    #[error("cannot read secret file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("give exactly one of `env` or `file`")]
    NotOneSource,
    #[error("the secret in environment variable {name} is empty")]
    EmptyEnv { name: String },
    #[error("the secret file {} is empty", path.display())]
    EmptyFile { path: PathBuf },
}

impl SecretError {
    /// Whether the secret is there but holds nothing (a set but empty variable, a file
    /// with nothing but a line ending).
    pub fn is_empty(&self) -> bool {
        matches!(self, Self::EmptyEnv { .. } | Self::EmptyFile { .. })
    }
}

/// Reads the secret. File paths are relative to `config_dir`; one trailing newline (as
/// `echo` and Kubernetes secrets leave) is dropped.
pub fn resolve(
    secret: &SecretRef,
    config_dir: &Path,
    env: &dyn Environment,
) -> Result<SecretBytes, SecretError> {
    match (&secret.env, &secret.file) {
        (Some(name), None) => {
            let value = env
                .var(name)
                .ok_or_else(|| SecretError::EnvNotSet { name: name.clone() })?;
            if value.is_empty() {
                return Err(SecretError::EmptyEnv { name: name.clone() });
            }
            Ok(SecretBytes(value.into_bytes()))
        }
        (None, Some(file)) => {
            let path = config_dir.join(file);
            let mut bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(source) => return Err(SecretError::Read { path, source }),
            };
            if bytes.ends_with(b"\n") {
                bytes.pop();
                if bytes.ends_with(b"\r") {
                    bytes.pop();
                }
            }
            if bytes.is_empty() {
                return Err(SecretError::EmptyFile { path });
            }
            Ok(SecretBytes(bytes))
        }
        _ => Err(SecretError::NotOneSource),
    }
}
