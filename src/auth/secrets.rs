//! Secrets named in the config (`{ env = "NAME" }` or `{ file = "path" }`), resolved at
//! compile time. The environment is a parameter, so tests never touch the real one.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::model::{Algorithm, SecretRef, oidc_defaults};

/// The id of a secret refused for its length: the same in `validate`, `serve`, the
/// reload log and `fluxlit doctor`.
pub const TOO_SHORT: &str = "secret_too_short";

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

/// Where a secret comes from, for messages (never its value).
pub fn source(secret: &SecretRef) -> String {
    match (&secret.env, &secret.file) {
        (Some(name), _) => format!("environment variable {name}"),
        (None, Some(file)) => format!("file {}", file.display()),
        (None, None) => "nowhere".to_owned(),
    }
}

/// How long a shared secret must be, and what a shorter one would allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinLength {
    /// What the secret is, in a message: "secret", "exchange secret".
    what: &'static str,
    pub bytes: usize,
    /// Why, in a message: "HS512 needs at least 64 (RFC 7518 §3.2), ...".
    needs: String,
}

/// A secret shorter than its [`MinLength`]. Says how long it is and where it comes from,
/// never what it holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {what} in {from} is {len} bytes; {needs}")]
pub struct TooShort {
    what: &'static str,
    from: String,
    len: usize,
    needs: String,
}

impl MinLength {
    /// A jwt provider's HS secret: as long as the hash of the strongest HMAC algorithm it
    /// lists; `None` when it lists none (the secret is not used then).
    pub fn hmac(algorithms: &[Algorithm]) -> Option<Self> {
        let (bytes, strongest) = algorithms
            .iter()
            .filter_map(|alg| Some((alg.hmac_key_bytes()?, alg)))
            .max_by_key(|(bytes, _)| *bytes)?;
        Some(Self {
            what: "secret",
            bytes,
            needs: format!(
                "{strongest:?} needs at least {bytes} (RFC 7518 §3.2), else tokens can be \
                 forged by guessing it"
            ),
        })
    }

    /// An oidc provider's `exchange_secret`.
    pub fn exchange_secret() -> Self {
        let bytes = oidc_defaults::MIN_EXCHANGE_SECRET;
        Self {
            what: "exchange secret",
            bytes,
            needs: format!(
                "it needs at least {bytes}, else whoever reaches the exchange can guess it \
                 and redeem auth codes"
            ),
        }
    }

    /// An oidc provider's `session_key`: as long as the AES-256 key derived from it.
    pub fn session_key() -> Self {
        let bytes = super::oidc::seal::MIN_SESSION_KEY;
        Self {
            what: "session key",
            bytes,
            needs: format!(
                "it needs at least {bytes}, else a guessed key lets anyone forge login \
                 cookies and read session records"
            ),
        }
    }

    /// Whether `secret`, read from `from`, is long enough.
    pub fn check(&self, from: &SecretRef, secret: &SecretBytes) -> Result<(), TooShort> {
        let len = secret.expose().len();
        if len >= self.bytes {
            return Ok(());
        }
        Err(TooShort {
            what: self.what,
            from: source(from),
            len,
            needs: self.needs.clone(),
        })
    }

    /// What to do about a secret that is too short.
    pub fn fix(&self) -> String {
        format!(
            "use a random secret of {} bytes or more, e.g. `openssl rand -base64 48`",
            self.bytes
        )
    }
}

/// Whether two secrets (or their hashes) are equal, in time that does not depend on
/// where they differ (their length is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct OneVariable(&'static str, &'static str);

    impl Environment for OneVariable {
        fn var(&self, name: &str) -> Option<String> {
            (name == self.0).then(|| self.1.to_owned())
        }
    }

    fn env(name: &str) -> SecretRef {
        SecretRef {
            env: Some(name.to_owned()),
            file: None,
        }
    }

    fn file(path: &str) -> SecretRef {
        SecretRef {
            env: None,
            file: Some(path.into()),
        }
    }

    #[test]
    fn errors_name_the_variable_or_the_file_and_tell_empty_from_missing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("blank"), "\r\n").unwrap();
        std::fs::write(dir.path().join("good"), "s3cret\n").unwrap();
        let set = OneVariable("SET", "s3cret");
        let blank = OneVariable("BLANK", "");

        let secret = resolve(&env("SET"), dir.path(), &set).unwrap();
        assert_eq!(secret.expose(), b"s3cret");
        let secret = resolve(&file("good"), dir.path(), &set).unwrap();
        assert_eq!(secret.expose(), b"s3cret");

        let error = resolve(&env("UNSET"), dir.path(), &set).unwrap_err();
        assert!(!error.is_empty());
        assert_eq!(error.to_string(), "environment variable UNSET is not set");

        let error = resolve(&env("BLANK"), dir.path(), &blank).unwrap_err();
        assert!(error.is_empty());
        assert!(error.to_string().contains("BLANK"), "{error}");

        let error = resolve(&file("blank"), dir.path(), &set).unwrap_err();
        assert!(error.is_empty());
        assert!(error.to_string().contains("blank"), "{error}");

        let error = resolve(&file("missing"), dir.path(), &set).unwrap_err();
        assert!(!error.is_empty());
        assert!(
            error.to_string().starts_with("cannot read secret file")
                && error.to_string().contains("missing"),
            "{error}"
        );

        let both = SecretRef {
            env: Some("SET".to_owned()),
            file: Some("good".into()),
        };
        let error = resolve(&both, dir.path(), &set).unwrap_err();
        assert_eq!(error.to_string(), "give exactly one of `env` or `file`");
    }
}
