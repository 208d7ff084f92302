//! Reading and parsing `fluxlit.toml`, keeping track of where every key is.
//!
//! Parsing goes through `toml`'s span-preserving table first, so every later problem
//! (unknown keys, type errors, validation) can be pointed at a line and column.
//! Unknown keys are collected all at once with `serde_ignored` rather than stopping at
//! the first, as `deny_unknown_fields` would.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use toml::de::DeTable;

use super::diagnostic::{Diagnostic, SpanIndex};
use super::model::Config;
use super::schema;

/// The bytes of a config file as read, with their hash.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    pub text: String,
    pub hash: SourceHash,
}

/// SHA-256 of the file's bytes: equal to what `sha256sum fluxlit.toml` prints.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceHash([u8; 32]);

impl SourceHash {
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The first 12 hex digits, enough to tell versions apart in a log line.
    pub fn short(&self) -> String {
        self.to_string()[..12].to_owned()
    }
}

impl fmt::Display for SourceHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for SourceHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SourceHash({self})")
    }
}

/// Why a config file could not be read at all.
#[derive(Debug, thiserror::Error)]
#[error("cannot read config file {}: {source}", path.display())]
pub struct ReadError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl ReadError {
    pub fn is_missing(&self) -> bool {
        self.source.kind() == io::ErrorKind::NotFound
    }
}

/// Reads the file. A file that is not UTF-8 is reported as unreadable with the reason.
pub fn read(path: &Path) -> Result<ConfigSource, ReadError> {
    let to_error = |source| ReadError {
        path: path.to_owned(),
        source,
    };
    let bytes = std::fs::read(path).map_err(to_error)?;
    let hash = SourceHash::of(&bytes);
    let text = String::from_utf8(bytes)
        .map_err(|err| to_error(io::Error::new(io::ErrorKind::InvalidData, err)))?;
    Ok(ConfigSource {
        path: path.to_owned(),
        text,
        hash,
    })
}

/// A parsed file: the config and where each of its keys is.
#[derive(Debug)]
pub struct Parsed {
    pub config: Config,
    pub spans: SpanIndex,
}

/// Parses the text into a [`Config`], or reports every syntax error, unknown key and
/// type error it can find (with locations).
pub fn parse(text: &str) -> Result<Parsed, Vec<Diagnostic>> {
    let table = DeTable::parse(text).map_err(|err| {
        let lines = SpanIndex::lines_only(text);
        let mut diagnostic = Diagnostic::error("", format!("invalid TOML: {}", err.message()));
        diagnostic.location = err.span().map(|span| lines.location(span.start));
        vec![diagnostic]
    })?;
    let spans = SpanIndex::new(text, table.get_ref());
    if table.get_ref().is_empty() {
        // Never intended, and what an in-place save looks like halfway through.
        return Err(vec![
            Diagnostic::error("", "the file has no settings")
                .with_help("a config needs at least [upstreams.NAME] and [[routes]] tables"),
        ]);
    }

    let mut unknown_keys = Vec::new();
    let deserializer = toml::de::Deserializer::from(table);
    let result = serde_ignored::deserialize(deserializer, |path| {
        unknown_keys.push(key_path(&path));
    });

    let mut diagnostics: Vec<Diagnostic> = unknown_keys
        .iter()
        .map(|path| unknown_key(path, &spans))
        .collect();
    let config = match result {
        Ok(config) => Some(config),
        Err(err) => {
            let path = err
                .span()
                .and_then(|span| spans.path_at(span.start))
                .unwrap_or_default();
            // serde repeats the offending value ("invalid type: string \"...\""): for a
            // secret written inline by mistake that would put it in logs and /snapshot.
            let message = if is_secret_key(&path) {
                "a secret is never written in the file: use { env = \"NAME\" } or \
                 { file = \"path\" } (the value is not repeated here)"
                    .to_owned()
            } else {
                err.message().to_owned()
            };
            let mut diagnostic = Diagnostic::error(path, message);
            diagnostic.location = err.span().map(|span| spans.location(span.start));
            diagnostics.push(diagnostic);
            None
        }
    };
    match config {
        Some(config) if diagnostics.is_empty() => Ok(Parsed { config, spans }),
        _ => {
            // serde visits tables in key order; users read the file top to bottom.
            diagnostics.sort_by_key(|d| d.location.map(|l| (l.line, l.column)));
            Err(diagnostics)
        }
    }
}

/// Whether a key path is a provider's secret or inside one (`hs256_secret`, and
/// `client_secret` or any other `*_secret` of `auth.providers.NAME`).
fn is_secret_key(path: &str) -> bool {
    let mut keys = path.split('.');
    keys.next() == Some("auth")
        && keys.next() == Some("providers")
        && keys.nth(1).is_some_and(|key| key.ends_with("_secret"))
}

fn unknown_key(path: &str, spans: &SpanIndex) -> Diagnostic {
    let (table, key) = match path.rsplit_once('.') {
        Some((table, key)) => (table, key),
        None => ("", path),
    };
    let known = schema::known_keys(table);
    let mut diagnostic = Diagnostic::error(path, format!("unknown key `{key}`"));
    diagnostic.help = Some(
        match super::suggest(key, known.iter().map(String::as_str)) {
            Some(suggestion) => format!("did you mean `{suggestion}`?"),
            None if known.is_empty() => "remove it".to_owned(),
            None => format!("remove it; the keys allowed here are: {}", known.join(", ")),
        },
    );
    diagnostic.location = spans.key_location(path);
    diagnostic
}

/// Renders a `serde_ignored` path the way TOML users write it: `routes[1].name`.
fn key_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        Path::Map { parent, key } => {
            let parent = key_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => key_path(parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_unknown_key_with_its_location() {
        let text = "[server]\nlisten = \"127.0.0.1:1\"\nlistn = 1\n\n[[routes]]\nnmae = \"a\"\nname = \"a\"\npath_prefix = \"/\"\nupstream = \"x\"\n";
        let errors = parse(text).unwrap_err();
        let rendered: Vec<_> = errors
            .iter()
            .map(|d| d.render(Path::new("f.toml")))
            .collect();
        assert_eq!(errors.len(), 2, "{rendered:#?}");
        assert!(rendered[0].starts_with("f.toml:3:1: error: server.listn: unknown key `listn`"));
        assert!(
            rendered[0].contains("did you mean `listen`?"),
            "{}",
            rendered[0]
        );
        assert!(rendered[1].starts_with("f.toml:6:1: error: routes[0].nmae: unknown key"));
    }

    #[test]
    fn a_type_error_names_the_key_and_location() {
        let errors = parse("[server]\nsecurity_headers = \"yes\"\n").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "server.security_headers");
        assert_eq!(
            errors[0].location.map(|l| (l.line, l.column)),
            Some((2, 20))
        );
    }

    #[test]
    fn an_empty_file_is_refused() {
        for text in ["", "\n  \n", "# only a comment\n"] {
            let errors = parse(text).unwrap_err();
            assert_eq!(errors[0].message, "the file has no settings");
        }
    }

    #[test]
    fn a_syntax_error_has_a_location() {
        let errors = parse("[server\nlisten = 1\n").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].message.starts_with("invalid TOML"),
            "{}",
            errors[0].message
        );
        assert_eq!(errors[0].location.map(|l| l.line), Some(1));
    }
}
