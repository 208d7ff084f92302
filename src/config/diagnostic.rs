//! Problems found in a config file, and where in the file they are.
//!
//! Every problem carries the TOML key path (`routes[1].upstream`) and, where the
//! parser knows it, the line and column, so `fluxlit validate` can print the familiar
//! `file:line:col: error: ...` form editors and CI logs link to.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;

use serde::Serialize;
use toml::de::{DeTable, DeValue};

/// How bad a problem is: errors refuse the file, warnings are reported and the file applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A 1-based line and column in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// One problem with a config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The TOML key path, e.g. `routes[1].upstream`; empty for the whole file.
    pub path: String,
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// A stable snake_case id where `fluxlit doctor` reports the same problem under one
    /// (`secret_too_short`), so scripts match both on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'static str>,
}

impl Diagnostic {
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            path: path.into(),
            message: message.into(),
            help: None,
            location: None,
            id: None,
        }
    }

    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(path, message)
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_id(mut self, id: &'static str) -> Self {
        self.id = Some(id);
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders the problem as `file:line:col: error: path: message [id]`, with the help on
    /// a second line.
    pub fn render(&self, file: &Path) -> String {
        DisplayWithFile {
            diagnostic: self,
            file,
        }
        .to_string()
    }
}

struct DisplayWithFile<'a> {
    diagnostic: &'a Diagnostic,
    file: &'a Path,
}

impl fmt::Display for DisplayWithFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.diagnostic;
        write!(f, "{}", self.file.display())?;
        if let Some(Location { line, column }) = d.location {
            write!(f, ":{line}:{column}")?;
        }
        let severity = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, ": {severity}: ")?;
        if !d.path.is_empty() {
            write!(f, "{}: ", d.path)?;
        }
        write!(f, "{}", d.message)?;
        if let Some(id) = d.id {
            write!(f, " [{id}]")?;
        }
        if let Some(help) = &d.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Where each key path of a TOML document is: its key and its value.
#[derive(Debug, Default)]
pub struct SpanIndex {
    entries: HashMap<String, KeySpans>,
    line_starts: Vec<usize>,
}

#[derive(Debug, Clone)]
struct KeySpans {
    key: Option<Range<usize>>,
    value: Range<usize>,
}

impl SpanIndex {
    pub fn new(text: &str, root: &DeTable<'_>) -> Self {
        let mut index = Self::lines_only(text);
        index.add_table("", root);
        index
    }

    /// An index that knows lines but no keys, for text that did not parse.
    pub fn lines_only(text: &str) -> Self {
        Self {
            entries: HashMap::new(),
            line_starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(at, _)| at + 1))
                .collect(),
        }
    }

    /// The deepest key path whose value contains the byte offset.
    pub fn path_at(&self, offset: usize) -> Option<String> {
        self.entries
            .iter()
            .filter(|(_, spans)| spans.value.contains(&offset))
            .min_by_key(|(_, spans)| spans.value.len())
            .map(|(path, _)| path.clone())
    }

    fn add_table(&mut self, prefix: &str, table: &DeTable<'_>) {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            self.add_value(&path, Some(key.span()), value.span(), value.get_ref());
        }
    }

    fn add_value(
        &mut self,
        path: &str,
        key: Option<Range<usize>>,
        value_span: Range<usize>,
        value: &DeValue<'_>,
    ) {
        self.entries.insert(
            path.to_owned(),
            KeySpans {
                key,
                value: value_span,
            },
        );
        match value {
            DeValue::Table(table) => self.add_table(path, table),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.add_value(&format!("{path}[{i}]"), None, item.span(), item.get_ref());
                }
            }
            _ => {}
        }
    }

    /// The location of the value at `path`, or of its closest ancestor the file has.
    pub fn value_location(&self, path: &str) -> Option<Location> {
        self.find(path)
            .map(|spans| self.location(spans.value.start))
    }

    /// The location of the key at `path` (for "unknown key" problems), else its value's.
    pub fn key_location(&self, path: &str) -> Option<Location> {
        self.find(path).map(|spans| {
            let start = spans.key.as_ref().unwrap_or(&spans.value).start;
            self.location(start)
        })
    }

    fn find(&self, path: &str) -> Option<&KeySpans> {
        let mut path = path;
        loop {
            if let Some(spans) = self.entries.get(path) {
                return Some(spans);
            }
            path = parent_path(path)?;
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn location(&self, offset: usize) -> Location {
        let line = self
            .line_starts
            .partition_point(|&start| start <= offset)
            .max(1);
        let line_start = self.line_starts[line - 1];
        Location {
            line,
            column: offset - line_start + 1,
        }
    }

    /// Fills in the location of each diagnostic from its key path.
    pub fn locate(&self, diagnostics: &mut [Diagnostic]) {
        for diagnostic in diagnostics.iter_mut().filter(|d| d.location.is_none()) {
            diagnostic.location = self.value_location(&diagnostic.path);
        }
    }
}

/// `routes[1].upstream` → `routes[1]` → `routes` → none.
fn parent_path(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = match (
        path.rfind('.'),
        path.ends_with(']').then(|| path.rfind('[')).flatten(),
    ) {
        (_, Some(bracket)) => bracket,
        (Some(dot), None) => dot,
        (None, None) => 0,
    };
    Some(&path[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_paths_walk_up_to_the_root() {
        assert_eq!(parent_path("routes[1].upstream"), Some("routes[1]"));
        assert_eq!(parent_path("routes[1]"), Some("routes"));
        assert_eq!(parent_path("routes"), Some(""));
        assert_eq!(parent_path(""), None);
    }

    #[test]
    fn locates_keys_and_values_by_path() {
        let text =
            "[server]\nlisten = \"x\"\n\n[[routes]]\nname = \"a\"\n\n[[routes]]\nname = \"b\"\n";
        let table = DeTable::parse(text).unwrap();
        let index = SpanIndex::new(text, table.get_ref());
        assert_eq!(
            index.value_location("server.listen"),
            Some(Location {
                line: 2,
                column: 10
            })
        );
        assert_eq!(
            index.key_location("routes[1].name"),
            Some(Location { line: 8, column: 1 })
        );
        // A key the file lacks points at the closest ancestor it has.
        assert_eq!(
            index.value_location("routes[1].upstream").map(|l| l.line),
            Some(7)
        );
    }
}
