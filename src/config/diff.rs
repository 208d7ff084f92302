//! What changes between two configs, in the words a reviewer reads in a pull request.
//!
//! `fluxlit diff` prints it, and every applied reload logs it and keeps it for
//! `/snapshot`. Routes are compared by name, upstreams and providers by key; everything
//! else (server, admin, trust, and tables added later) key by key. Secrets are already
//! references in a config (`{ env }`, `{ file }`) and are printed as such; passwords in
//! URLs (a Redis store's) are redacted. A route's fields are only rendered when the
//! route differs, so comparing two configs of many routes stays linear.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use super::model::{Config, Route};

/// What a reviewer sees instead of a URL's password.
const REDACTED: &str = "redacted";

/// Every difference between two configs, in a stable order: settings, upstreams,
/// routes, auth providers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConfigDiff {
    pub entries: Vec<Entry>,
}

/// One line of the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// `server.listen`, "route `api`", "upstream `ui`", "provider `corp`".
    pub subject: String,
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Change {
    /// A new route, upstream or provider, with what it is in a few words.
    Added {
        summary: String,
    },
    Removed,
    /// Some keys of a route, upstream or provider.
    Changed {
        fields: Vec<FieldChange>,
    },
    /// A key outside routes, upstreams and providers (`subject` is its path).
    Setting(FieldChange),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// The key, relative to the subject (`upstream`, `store`, `paths.login`).
    pub key: String,
    /// The values as a reviewer reads them; `none` where the key is absent.
    pub old: String,
    pub new: String,
    /// A static key: a reload keeps its running value, a restart applies it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub needs_restart: bool,
}

impl ConfigDiff {
    /// The difference from `old` (e.g. the running config) to `new` (e.g. the file).
    pub fn between(old: &Config, new: &Config) -> Self {
        let mut entries = Vec::new();
        settings(old, new, &mut entries);
        keyed(
            "upstream",
            old.upstreams.iter(),
            new.upstreams.iter(),
            |upstream| match (&upstream.url, &upstream.builtin) {
                (Some(url), _) => redact_url(url),
                (None, Some(builtin)) => format!("builtin {}", render(&to_value(builtin))),
                (None, None) => "no address".to_owned(),
            },
            &mut entries,
        );
        keyed(
            "route",
            old.routes.iter().map(|r| (&r.name, r)),
            new.routes.iter().map(|r| (&r.name, r)),
            route_summary,
            &mut entries,
        );
        keyed(
            "provider",
            old.auth.providers.iter(),
            new.auth.providers.iter(),
            |provider| render(&to_value(provider.kind)),
            &mut entries,
        );
        Self { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The static keys that changed: a reload refuses them, a restart applies them.
    pub fn needs_restart(&self) -> Vec<&str> {
        self.entries
            .iter()
            .filter_map(|entry| match &entry.change {
                Change::Setting(field) if field.needs_restart => Some(entry.subject.as_str()),
                _ => None,
            })
            .collect()
    }

    /// One line per entry; empty when nothing changed.
    pub fn lines(&self) -> Vec<String> {
        self.entries.iter().map(ToString::to_string).collect()
    }
}

/// One entry per line, or `no changes`.
impl fmt::Display for ConfigDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entries.is_empty() {
            return f.write_str("no changes");
        }
        for (index, entry) in self.entries.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{entry}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let subject = &self.subject;
        match &self.change {
            Change::Added { summary } => write!(f, "{subject} added: {summary}"),
            Change::Removed => write!(f, "{subject} removed"),
            Change::Changed { fields } => {
                write!(f, "{subject}: ")?;
                for (index, field) in fields.iter().enumerate() {
                    if index > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{field}")?;
                }
                Ok(())
            }
            Change::Setting(field) => write!(f, "{subject} {}", FieldValues(field)),
        }
    }
}

impl fmt::Display for FieldChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.key, FieldValues(self))
    }
}

/// `old → new`, and why it waits for a restart when it does.
struct FieldValues<'a>(&'a FieldChange);

impl fmt::Display for FieldValues<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} → {}", self.0.old, self.0.new)?;
        if self.0.needs_restart {
            f.write_str(" would be refused: static, needs a restart")?;
        }
        Ok(())
    }
}

/// The config as JSON with every URL's password redacted: what the admin listener shows
/// and `fluxlit diff --admin` reads. Secrets are references already.
pub fn redacted_json(config: &Config) -> Value {
    let mut value = to_value(config);
    redact(&mut value);
    value
}

fn redact(value: &mut Value) {
    match value {
        Value::String(text) => {
            if let std::borrow::Cow::Owned(redacted) = redact_str(text) {
                *text = redacted;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::Object(map) => map.values_mut().for_each(redact),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn redact_url(text: &str) -> String {
    redact_str(text).into_owned()
}

/// `text` with the password of a URL replaced, when it is a URL with a password.
fn redact_str(text: &str) -> std::borrow::Cow<'_, str> {
    if !(text.contains("://") && text.contains('@')) {
        return text.into();
    }
    match url::Url::parse(text) {
        Ok(mut url) if url.password().is_some() => {
            if url.set_password(Some(REDACTED)).is_ok() {
                url.to_string().into()
            } else {
                REDACTED.into()
            }
        }
        _ => text.into(),
    }
}

fn to_value(value: impl Serialize) -> Value {
    // The model's types serialise to JSON without fail (string keys, no non-finite floats).
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn route_summary(route: &Route) -> String {
    let mut summary = format!("{} → upstream {}", route.path_prefix, route.upstream);
    if let Some(auth) = &route.auth {
        summary.push_str(&format!(", auth {auth}"));
    }
    summary
}

/// Keys outside routes, upstreams and providers, compared one by one.
fn settings(old: &Config, new: &Config, entries: &mut Vec<Entry>) {
    // An admin listener added or removed is one static change (`admin.listen`): its
    // limits come and go with it, and are not changes of their own.
    let admin_comes_or_goes = old.admin.is_some() != new.admin.is_some();
    for field in compare(
        &redacted_value(settings_of(old)),
        &redacted_value(settings_of(new)),
    ) {
        if admin_comes_or_goes && field.key.starts_with("admin.") && field.key != "admin.listen" {
            continue;
        }
        entries.push(Entry {
            subject: field.key.clone(),
            change: Change::Setting(FieldChange {
                needs_restart: super::static_keys::STATIC_KEYS.contains(&field.key.as_str()),
                ..field
            }),
        });
    }
}

/// The config without its (possibly many) routes, upstreams and providers.
fn settings_of(config: &Config) -> Config {
    let mut auth = config.auth.clone();
    auth.providers.clear();
    Config {
        server: config.server.clone(),
        admin: config.admin.clone(),
        trust: config.trust.clone(),
        log: config.log.clone(),
        identity: config.identity.clone(),
        doctor: config.doctor.clone(),
        upstreams: BTreeMap::new(),
        routes: Vec::new(),
        auth,
    }
}

/// Added, removed and changed items of a named collection. Added and changed come in
/// `new`'s order, then the removed in `old`'s.
fn keyed<'a, T: PartialEq + Serialize + 'a>(
    what: &str,
    old: impl Iterator<Item = (&'a String, &'a T)>,
    new: impl Iterator<Item = (&'a String, &'a T)>,
    summary: impl Fn(&T) -> String,
    entries: &mut Vec<Entry>,
) {
    let old: Vec<(&String, &T)> = old.collect();
    let by_name: HashMap<&str, &T> = old
        .iter()
        .map(|(name, item)| (name.as_str(), *item))
        .collect();
    let mut seen: HashMap<&str, ()> = HashMap::with_capacity(old.len());
    for (name, item) in new {
        seen.insert(name.as_str(), ());
        let subject = format!("{what} `{name}`");
        match by_name.get(name.as_str()) {
            None => entries.push(Entry {
                subject,
                change: Change::Added {
                    summary: summary(item),
                },
            }),
            Some(before) if *before != item => {
                let fields = compare(&redacted_value(*before), &redacted_value(item));
                // Items that differ only in a redacted password read the same: say nothing.
                if !fields.is_empty() {
                    entries.push(Entry {
                        subject,
                        change: Change::Changed { fields },
                    });
                }
            }
            Some(_) => {}
        }
    }
    for (name, _) in old {
        if !seen.contains_key(name.as_str()) {
            entries.push(Entry {
                subject: format!("{what} `{name}`"),
                change: Change::Removed,
            });
        }
    }
}

fn redacted_value(item: impl Serialize) -> Value {
    let mut value = to_value(item);
    redact(&mut value);
    value
}

/// The keys whose values differ, by dotted path (`paths.login`), in key order. Tables
/// are compared key by key (an absent table as an empty one); anything else, lists
/// included, as a whole. Absent and null both read as `none`.
fn compare(old: &Value, new: &Value) -> Vec<FieldChange> {
    fn walk(path: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<FieldChange>) {
        fn table<'a>(
            value: Option<&'a Value>,
            empty: &'a serde_json::Map<String, Value>,
        ) -> Option<&'a serde_json::Map<String, Value>> {
            match value {
                None => Some(empty),
                Some(Value::Object(map)) => Some(map),
                Some(_) => None,
            }
        }
        let (old, new) = (old.filter(|v| !v.is_null()), new.filter(|v| !v.is_null()));
        // A static table (`server.tls`) added or removed is one change, not one per key:
        // its presence is what needs a restart; its values may change on a reload.
        if old.is_some() != new.is_some() && super::static_keys::STATIC_KEYS.contains(&path) {
            out.push(FieldChange {
                key: path.to_owned(),
                old: old.map_or_else(|| "none".to_owned(), render),
                new: new.map_or_else(|| "none".to_owned(), render),
                needs_restart: false,
            });
            return;
        }
        let empty = serde_json::Map::new();
        match (table(old, &empty), table(new, &empty)) {
            (Some(before), Some(after)) => {
                let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
                keys.sort_unstable();
                keys.dedup();
                for key in keys {
                    let inner = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(&inner, before.get(key), after.get(key), out);
                }
            }
            _ if old == new => {}
            _ => out.push(FieldChange {
                key: path.to_owned(),
                old: old.map_or_else(|| "none".to_owned(), render),
                new: new.map_or_else(|| "none".to_owned(), render),
                needs_restart: false,
            }),
        }
    }
    let mut out = Vec::new();
    walk("", Some(old), Some(new), &mut out);
    out
}

/// A value as a reviewer reads it: strings bare unless empty or spaced, lists in
/// brackets.
fn render(value: &Value) -> String {
    match value {
        Value::String(text) if text.is_empty() || text.contains([' ', ';', ',']) => {
            format!("{text:?}")
        }
        Value::String(text) => text.clone(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(render).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let pairs: Vec<String> = map
                .iter()
                .map(|(key, value)| format!("{key} = {}", render(value)))
                .collect();
            format!("{{ {} }}", pairs.join(", "))
        }
        Value::Null => "none".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        crate::config::load::parse(text)
            .unwrap_or_else(|errors| panic!("{errors:?}"))
            .config
    }

    const BASE: &str = r#"
[server]
listen = "127.0.0.1:8080"

[upstreams.api]
url = "http://127.0.0.1:8000"

[upstreams.ui]
url = "http://127.0.0.1:8501"

[[routes]]
name = "api"
path_prefix = "/api"
upstream = "api"

[[routes]]
name = "ui"
path_prefix = "/"
upstream = "ui"

[auth.providers.main]
kind = "jwt"
issuer = "https://example.internal"
audience = "example-api"
algorithms = ["HS256"]
hs256_secret = { env = "JWT_SECRET" }

[auth.providers.corp]
kind = "oidc"
issuer_url = "https://idp.example"
client_id = "fluxlit"
client_secret = { env = "OIDC_CLIENT_SECRET" }
scopes = ["openid"]
mint = "main"
"#;

    fn diff(old: &str, new: &str) -> String {
        ConfigDiff::between(&config(old), &config(new)).to_string()
    }

    #[test]
    fn equal_configs_have_no_changes() {
        let base = config(BASE);
        let diff = ConfigDiff::between(&base, &base.clone());
        assert!(diff.is_empty());
        assert_eq!(diff.to_string(), "no changes");
    }

    #[test]
    fn a_changed_route_names_each_changed_key() {
        let new = BASE.replace(
            "name = \"api\"\npath_prefix = \"/api\"\nupstream = \"api\"",
            "name = \"api\"\npath_prefix = \"/api\"\nupstream = \"ui\"\nauth = \"main\"",
        );
        assert_eq!(
            diff(BASE, &new),
            "route `api`: auth none → main; upstream api → ui"
        );
    }

    #[test]
    fn added_and_removed_items_are_named() {
        let new = BASE
            .replace("[upstreams.ui]\nurl = \"http://127.0.0.1:8501\"\n", "")
            .replace(
                "name = \"ui\"\npath_prefix = \"/\"\nupstream = \"ui\"",
                "name = \"docs\"\npath_prefix = \"/docs\"\nupstream = \"api\"",
            );
        assert_eq!(
            diff(BASE, &new),
            "upstream `ui` removed\n\
             route `docs` added: /docs → upstream api\n\
             route `ui` removed"
        );
    }

    #[test]
    fn a_provider_change_shows_lists_and_secret_references_never_values() {
        let new = BASE
            .replace("scopes = [\"openid\"]", "scopes = [\"openid\", \"email\"]")
            .replace("{ env = \"JWT_SECRET\" }", "{ env = \"JWT_SECRET_2\" }");
        assert_eq!(
            diff(BASE, &new),
            "provider `corp`: scopes [openid] → [openid, email]\n\
             provider `main`: hs256_secret.env JWT_SECRET → JWT_SECRET_2"
        );
    }

    #[test]
    fn static_keys_are_marked_as_needing_a_restart() {
        let new = BASE.replace("127.0.0.1:8080", "127.0.0.1:9090")
            + "\n[admin]\nlisten = \"127.0.0.1:9901\"\n";
        let diff = ConfigDiff::between(&config(BASE), &config(&new));
        assert_eq!(
            diff.to_string(),
            "admin.listen none → 127.0.0.1:9901 would be refused: static, needs a restart\n\
             server.listen 127.0.0.1:8080 → 127.0.0.1:9090 would be refused: static, needs a restart"
        );
        assert_eq!(diff.needs_restart(), ["admin.listen", "server.listen"]);
    }

    #[test]
    fn the_admin_listeners_limits_change_without_a_restart() {
        let old = BASE.to_owned() + "\n[admin]\nlisten = \"127.0.0.1:9901\"\n";
        let new = old.clone() + "idle_timeout = \"10s\"\n";
        let diff = ConfigDiff::between(&config(&old), &config(&new));
        assert_eq!(diff.to_string(), "admin.idle_timeout 30s → 10s");
        assert!(diff.needs_restart().is_empty());
    }

    /// One list of static keys: what the diff marks is what a reload refuses.
    #[test]
    fn the_keys_marked_static_are_those_a_reload_refuses() {
        let old = config(BASE);
        let new = config(
            &(BASE.replace("127.0.0.1:8080", "127.0.0.1:9090")
                + "\n[admin]\nlisten = \"127.0.0.1:9901\"\n"
                + "\n[log]\nformat = \"json\"\nlevel = \"debug\"\naccess_log_path = \"a.log\"\n"
                + "\n[server.tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n"),
        );
        let diff = ConfigDiff::between(&old, &new);
        let mut marked = diff.needs_restart();
        marked.sort_unstable();
        let mut refused_config = new.clone();
        let refused = crate::config::static_keys::keep_static_keys(&mut refused_config, &old);
        let mut refused: Vec<&str> = refused
            .iter()
            .filter_map(|message| message.split(' ').next())
            .collect();
        refused.sort_unstable();
        let mut listed = crate::config::static_keys::STATIC_KEYS.to_vec();
        listed.sort_unstable();
        assert_eq!(marked, refused);
        assert_eq!(marked, listed);
        assert!(
            ConfigDiff::between(&old, &refused_config)
                .needs_restart()
                .is_empty()
        );
    }

    #[test]
    fn server_settings_and_security_headers_are_compared_key_by_key() {
        let new = BASE.replace(
            "listen = \"127.0.0.1:8080\"",
            "listen = \"127.0.0.1:8080\"\nidle_timeout = \"30s\"\nsecurity_headers = { referrer_policy = \"no-referrer\" }",
        );
        assert_eq!(
            diff(BASE, &new),
            "server.idle_timeout 1m → 30s\n\
             server.security_headers true → { referrer_policy = no-referrer }"
        );
    }

    #[test]
    fn passwords_in_urls_are_redacted() {
        let old = BASE.replace(
            "mint = \"main\"",
            "mint = \"main\"\nstore = \"redis://:hunter2@127.0.0.1:6379/0\"",
        );
        let new = old.replace("6379/0", "6379/1");
        let text = diff(&old, &new);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains(
                "redis://:redacted@127.0.0.1:6379/0 → redis://:redacted@127.0.0.1:6379/1"
            ),
            "{text}"
        );
        let json = redacted_json(&config(&old)).to_string();
        assert!(
            !json.contains("hunter2") && json.contains("redacted"),
            "{json}"
        );
    }

    #[test]
    fn many_routes_with_one_change_give_one_line() {
        let mut old = String::from("[upstreams.a]\nurl = \"http://127.0.0.1:1\"\n");
        for i in 0..10_000 {
            old.push_str(&format!(
                "[[routes]]\nname = \"r{i}\"\npath_prefix = \"/r{i}\"\nupstream = \"a\"\n"
            ));
        }
        let mut new_config = config(&old);
        new_config.routes[5_000].strip_prefix = true;
        let diff = ConfigDiff::between(&config(&old), &new_config);
        assert_eq!(diff.to_string(), "route `r5000`: strip_prefix false → true");
    }
}
