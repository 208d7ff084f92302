//! Reading and parsing `fluxlit.toml`, keeping track of where every key is.
//!
//! Parsing goes through `toml`'s span-preserving table first, so every later problem
//! (unknown keys, type errors, validation) can be pointed at a line and column.
//! Unknown keys are collected all at once with `serde_ignored` rather than stopping at
//! the first, as `deny_unknown_fields` would; a value of the wrong type is reported and
//! left out, and the rest of the file is read on, so validation still sees it.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use toml::de::{DeTable, DeValue};

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

/// A file read as far as it can be: the config when one could be made, every problem
/// found on the way, and the keys left out to get past them.
#[derive(Debug)]
pub struct PartlyParsed {
    /// `None` when the file is not TOML, or a problem could not be stepped over.
    pub config: Option<Config>,
    pub spans: SpanIndex,
    /// Unknown keys, values of the wrong type and missing keys, each located, in file
    /// order.
    pub errors: Vec<Diagnostic>,
    /// The key paths left out or filled in to read on (`upstreams.api.timeout`,
    /// `routes[1].upstream`, `auth.providers.corp`): what validation finds there is only
    /// the echo of a problem reported already.
    pub skipped: Vec<String>,
}

impl PartlyParsed {
    /// Whether validation's `diagnostic` about `config` is only the echo of a problem
    /// reported already: it is about a key that was left out or filled in (or inside it,
    /// or the table holding it), or it is a reference to a left-out upstream or provider.
    pub fn is_echo(&self, diagnostic: &Diagnostic, config: &Config) -> bool {
        let path = diagnostic.path.as_str();
        let skipped = |key: &str| self.skipped.iter().any(|s| s == key);
        self.skipped
            .iter()
            .any(|skipped| is_within(path, skipped) || is_within(skipped, path))
            || self.names_skipped(path, config, &skipped)
    }

    fn names_skipped(&self, path: &str, config: &Config, skipped: &dyn Fn(&str) -> bool) -> bool {
        let route = |suffix: &str| {
            path.strip_prefix("routes[")
                .and_then(|rest| rest.strip_suffix(suffix))
                .and_then(|index| index.parse::<usize>().ok())
                .and_then(|index| config.routes.get(index))
        };
        if let Some(route) = route("].upstream") {
            return skipped(&format!("upstreams.{}", route.upstream));
        }
        if let Some(auth) = route("].auth").and_then(|route| route.auth.as_ref()) {
            return skipped(&format!("auth.providers.{auth}"));
        }
        let mint = path
            .strip_prefix("auth.providers.")
            .and_then(|rest| rest.strip_suffix(".mint"))
            .and_then(|name| config.auth.providers.get(name))
            .and_then(|provider| provider.mint.as_ref());
        mint.is_some_and(|mint| skipped(&format!("auth.providers.{mint}")))
    }
}

/// `inner` is `outer` or a key below it (`routes[0].name` is within `routes[0]` and
/// `routes`, not within `route`).
fn is_within(inner: &str, outer: &str) -> bool {
    outer.is_empty()
        || inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// How many problems one read steps over before it gives up: more than any
/// hand-written file has, few enough that a hostile one costs little.
const MAX_STEPS_OVER: usize = 64;

/// Parses the text into a [`Config`], or reports every syntax error, unknown key and
/// type error it can find (with locations).
pub fn parse(text: &str) -> Result<Parsed, Vec<Diagnostic>> {
    let parsed = parse_partly(text);
    match parsed.config {
        Some(config) if parsed.errors.is_empty() => Ok(Parsed {
            config,
            spans: parsed.spans,
        }),
        _ => Err(parsed.errors),
    }
}

/// Parses the text as far as it can be read, so that validation can still see the rest
/// of a file with mistakes in it:
///
/// - unknown keys are collected all at once;
/// - a value of the wrong type is reported and left out: its default stands in (a value
///   in an array takes the array with it, as removing one item would renumber the
///   others);
/// - a missing required key is reported and filled in with an empty string; where that
///   does not fit either (a required key of another type), the table holding it is left
///   out: a route keeps its place, an upstream or provider goes.
///
/// Only a syntax error, or more than [`MAX_STEPS_OVER`] such problems, leaves no config.
pub fn parse_partly(text: &str) -> PartlyParsed {
    let lines_only = |errors| PartlyParsed {
        config: None,
        spans: SpanIndex::lines_only(text),
        errors,
        skipped: Vec::new(),
    };
    let mut table = match DeTable::parse(text) {
        Ok(table) => table,
        Err(err) => {
            let lines = SpanIndex::lines_only(text);
            let mut diagnostic = Diagnostic::error("", format!("invalid TOML: {}", err.message()));
            diagnostic.location = err.span().map(|span| lines.location(span.start));
            return lines_only(vec![diagnostic]);
        }
    };
    let spans = SpanIndex::new(text, table.get_ref());
    if table.get_ref().is_empty() {
        // Never intended, and what an in-place save looks like halfway through.
        return lines_only(vec![
            Diagnostic::error("", "the file has no settings")
                .with_help("a config needs at least [upstreams.NAME] and [[routes]] tables"),
        ]);
    }

    let mut unknown_keys = BTreeSet::new();
    let mut errors = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    // Missing keys given an empty string: their paths, and where an error about the
    // filling points, with the table holding it.
    let mut filled: Vec<(String, usize, Vec<Step>)> = Vec::new();
    let mut config = None;
    for _ in 0..=MAX_STEPS_OVER {
        let deserializer = toml::de::Deserializer::from(table.clone());
        let result = serde_ignored::deserialize(deserializer, |path| {
            unknown_keys.insert(key_path(&path));
        });
        let err = match result {
            Ok(parsed) => {
                config = Some(parsed);
                break;
            }
            Err(err) => err,
        };
        let Some(offset) = err.span().map(|span| span.start) else {
            errors.push(Diagnostic::error("", err.message()));
            break;
        };
        let root = table.get_mut();
        let stepped_over = match missing_field(err.message()) {
            Some(field) => {
                let Some(holder) = table_without(root, offset, field) else {
                    errors.push(value_error(&err, &spans));
                    break;
                };
                let key = format!("{}.{field}", render(&holder));
                if !skipped.contains(&key) {
                    let path = render(&holder);
                    let mut diagnostic = Diagnostic::error(&path, format!("missing key `{field}`"))
                        .with_help(format!("add `{field} = ...` to it"));
                    diagnostic.location = spans.key_location(&path);
                    errors.push(diagnostic);
                }
                if filled.iter().any(|(path, ..)| *path == key) {
                    leave_out(root, &holder)
                } else {
                    fill_in(root, &holder, field).map(|at| {
                        filled.push((key.clone(), at, holder));
                        key
                    })
                }
            }
            None => {
                let steps = steps_to(root, offset);
                if let Some((_, _, holder)) = filled.iter().find(|(_, at, _)| *at == offset) {
                    // The empty string filled in does not fit: the table goes.
                    leave_out(root, holder)
                } else {
                    errors.push(value_error(&err, &spans));
                    let key = steps
                        .iter()
                        .rposition(|step| matches!(step, Step::Key(_)))
                        .map_or(&steps[..0], |last| &steps[..=last]);
                    leave_out(root, key)
                }
            }
        };
        match stepped_over {
            Some(path) => skipped.push(path),
            None => break,
        }
    }

    errors.extend(unknown_keys.iter().map(|path| unknown_key(path, &spans)));
    // serde visits tables in key order; users read the file top to bottom.
    errors.sort_by_key(|d| d.location.map(|l| (l.line, l.column)));
    PartlyParsed {
        config,
        spans,
        errors,
        skipped,
    }
}

/// The field a serde "missing field `name`" error names.
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
}

/// A value serde could not take, as a diagnostic at its key.
fn value_error(err: &toml::de::Error, spans: &SpanIndex) -> Diagnostic {
    let path = err
        .span()
        .and_then(|span| spans.path_at(span.start))
        .unwrap_or_default();
    // serde repeats the offending value ("invalid type: string \"...\""): for a secret
    // written inline by mistake that would put it in logs and /snapshot.
    let message = if is_secret_key(&path) {
        "a secret is never written in the file: use { env = \"NAME\" } or \
         { file = \"path\" } (the value is not repeated here)"
            .to_owned()
    } else {
        err.message().to_owned()
    };
    let mut diagnostic = Diagnostic::error(path, message);
    diagnostic.location = err.span().map(|span| spans.location(span.start));
    diagnostic
}

/// One step from a table or array to a value in it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// `routes[1].upstream`, as diagnostics name keys.
fn render(steps: &[Step]) -> String {
    let mut path = String::new();
    for step in steps {
        match step {
            Step::Key(key) if path.is_empty() => path.push_str(key),
            Step::Key(key) => {
                path.push('.');
                path.push_str(key);
            }
            Step::Index(index) => path.push_str(&format!("[{index}]")),
        }
    }
    path
}

/// The steps to the value with the smallest span that holds the byte `offset`. Every
/// value is looked at: the span of a table made implicitly by a header like
/// `[auth.providers.corp]` does not cover the keys under it.
fn steps_to(root: &DeTable<'_>, offset: usize) -> Vec<Step> {
    let mut best: Option<(usize, Vec<Step>)> = None;
    let mut steps = Vec::new();
    visit_table(root, offset, &mut steps, &mut best);
    best.map(|(_, steps)| steps).unwrap_or_default()
}

fn visit_table(
    table: &DeTable<'_>,
    offset: usize,
    steps: &mut Vec<Step>,
    best: &mut Option<(usize, Vec<Step>)>,
) {
    for (key, value) in table {
        steps.push(Step::Key(key.get_ref().to_string()));
        visit_value(value, offset, steps, best);
        steps.pop();
    }
}

fn visit_value(
    value: &toml::Spanned<DeValue<'_>>,
    offset: usize,
    steps: &mut Vec<Step>,
    best: &mut Option<(usize, Vec<Step>)>,
) {
    let span = value.span();
    if span.contains(&offset) && best.as_ref().is_none_or(|(len, _)| span.len() < *len) {
        *best = Some((span.len(), steps.clone()));
    }
    match value.get_ref() {
        DeValue::Table(table) => visit_table(table, offset, steps, best),
        DeValue::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                steps.push(Step::Index(index));
                visit_value(item, offset, steps, best);
                steps.pop();
            }
        }
        _ => {}
    }
}

/// The value at `steps`, with its span.
fn value_at<'a, 'i>(
    root: &'a DeTable<'i>,
    steps: &[Step],
) -> Option<&'a toml::Spanned<DeValue<'i>>> {
    let (first, rest) = steps.split_first()?;
    let Step::Key(key) = first else { return None };
    let mut value = root.get(key.as_str())?;
    for step in rest {
        value = match (step, value.get_ref()) {
            (Step::Key(key), DeValue::Table(table)) => table.get(key.as_str())?,
            (Step::Index(index), DeValue::Array(items)) => items.get(*index)?,
            _ => return None,
        };
    }
    Some(value)
}

/// The table at `steps` (the root for none).
fn table_at_mut<'a, 'i>(root: &'a mut DeTable<'i>, steps: &[Step]) -> Option<&'a mut DeTable<'i>> {
    let mut table = root;
    let mut steps = steps.iter().peekable();
    while let Some(step) = steps.next() {
        let Step::Key(key) = step else { return None };
        let mut value = table.get_mut(key.as_str())?.get_mut();
        while let Some(Step::Index(index)) = steps.peek() {
            let DeValue::Array(items) = value else {
                return None;
            };
            value = items.get_mut(*index)?.get_mut();
            steps.next();
        }
        let DeValue::Table(inner) = value else {
            return None;
        };
        table = inner;
    }
    Some(table)
}

/// The table a "missing field" error at `offset` is about: the deepest table holding the
/// offset that lacks `field`, or in an array of tables (whose errors point at the
/// array), the first item that lacks it.
fn table_without(root: &DeTable<'_>, offset: usize, field: &str) -> Option<Vec<Step>> {
    let steps = steps_to(root, offset);
    (0..=steps.len()).rev().find_map(|len| {
        let at = &steps[..len];
        let lacks = |value: &DeValue<'_>| match value {
            DeValue::Table(table) => !table.contains_key(field),
            _ => false,
        };
        match (len, value_at(root, at).map(toml::Spanned::get_ref)) {
            (0, _) => (!root.contains_key(field)).then(Vec::new),
            (_, Some(DeValue::Array(items))) => items
                .iter()
                .position(|item| lacks(item.get_ref()))
                .map(|index| [at, &[Step::Index(index)]].concat()),
            (_, Some(value)) if lacks(value) => Some(at.to_vec()),
            _ => None,
        }
    })
}

/// Removes the key at `steps` (which must end in a key), and returns its path.
fn leave_out(root: &mut DeTable<'_>, steps: &[Step]) -> Option<String> {
    let (Step::Key(key), parent) = steps.split_last()? else {
        return None;
    };
    table_at_mut(root, parent)?.remove(key.as_str())?;
    Some(render(steps))
}

/// Gives the table at `steps` an empty string for `field`, and returns where an error
/// about it will point (the table's own place: no value of the file starts there), or
/// `None` when there is no table.
fn fill_in(root: &mut DeTable<'_>, steps: &[Step], field: &str) -> Option<usize> {
    let span = value_at(root, steps).map_or(0..0, |value| value.span());
    let table = table_at_mut(root, steps)?;
    let empty = toml::Spanned::new(span.clone(), DeValue::String(String::new().into()));
    table.insert(
        toml::Spanned::new(span.clone(), field.to_owned().into()),
        empty,
    );
    Some(span.start)
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

    fn rendered(parsed: &PartlyParsed) -> Vec<String> {
        parsed
            .errors
            .iter()
            .map(|d| d.render(Path::new("f.toml")))
            .collect()
    }

    #[test]
    fn a_value_of_the_wrong_type_is_left_out_and_the_rest_is_read() {
        let text = "[server]\nheader_read_timeout = 5\nlistn = 1\n\n[upstreams.api]\nurl = \"http://127.0.0.1:1\"\ntimeout = \"9s\"\n\n[[routes]]\nname = \"a\"\npath_prefix = \"/\"\nupstream = \"api\"\nstrip_prefix = \"yes\"\n";
        let parsed = parse_partly(text);
        let errors = rendered(&parsed);
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(
            errors[0].starts_with("f.toml:2:23: error: server.header_read_timeout: invalid type")
        );
        assert!(errors[1].starts_with("f.toml:3:1: error: server.listn: unknown key"));
        assert!(errors[2].starts_with("f.toml:13:16: error: routes[0].strip_prefix: invalid type"));
        let config = parsed.config.expect("the rest of the file is read");
        assert_eq!(config.upstreams["api"].timeout.to_string(), "9s");
        assert_eq!(config.routes[0].upstream, "api");
        assert_eq!(
            parsed.skipped,
            ["routes[0].strip_prefix", "server.header_read_timeout"]
        );
    }

    #[test]
    fn a_missing_key_is_reported_at_its_table_and_filled_in() {
        let text = "[[routes]]\nname = \"a\"\npath_prefix = \"/\"\nupstream = \"x\"\n\n[[routes]]\nname = \"b\"\npath_prefix = \"/b\"\n";
        let parsed = parse_partly(text);
        assert_eq!(
            rendered(&parsed),
            [
                "f.toml:6:1: error: routes[1]: missing key `upstream`\n  help: add `upstream = ...` to it"
            ]
        );
        let config = parsed.config.expect("read on");
        assert_eq!(config.routes[1].name, "b");
        assert_eq!(parsed.skipped, ["routes[1].upstream"]);
    }

    #[test]
    fn a_table_whose_required_key_does_not_fit_is_left_out_and_references_to_it_are_not_reported() {
        let text = "[[routes]]\nname = \"a\"\npath_prefix = \"/\"\nupstream = \"x\"\nauth = \"corp\"\n\n[auth.providers.corp]\nkind = \"jwtt\"\n";
        let parsed = parse_partly(text);
        let errors = rendered(&parsed);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0]
                .starts_with("f.toml:8:8: error: auth.providers.corp.kind: unknown variant `jwtt`")
        );
        let config = parsed.config.as_ref().expect("read on");
        assert!(config.auth.providers.is_empty());
        let reference = Diagnostic::error("routes[0].auth", "unknown auth provider \"corp\"");
        assert!(parsed.is_echo(&reference, config));
        let unrelated = Diagnostic::error("routes[0].upstream", "unknown upstream \"x\"");
        assert!(!parsed.is_echo(&unrelated, config));
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
