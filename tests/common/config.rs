//! Config files as text, built table by table, so that a test spells out only what it is
//! about. Tests that check line and column numbers write their files out in full
//! instead.

use std::fmt;

/// The text of a config file: tables in the order they were added, a blank line between
/// two. [`ConfigText::with`] adds lines to the table added last.
#[derive(Debug, Clone, Default)]
pub struct ConfigText(String);

impl ConfigText {
    pub fn new() -> Self {
        Self::default()
    }

    /// A table: its `header` as written (`[server]`, `[[routes]]`) and its `lines`.
    pub fn table(mut self, header: &str, lines: &str) -> Self {
        if !self.0.is_empty() {
            self.0.push('\n');
        }
        self.0.push_str(header);
        self.0.push('\n');
        self.with(lines)
    }

    /// More lines (`key = value`, newline separated) in the table added last.
    pub fn with(mut self, lines: &str) -> Self {
        for line in lines.lines() {
            self.0.push_str(line);
            self.0.push('\n');
        }
        self
    }

    /// `[server]` with `lines`.
    pub fn server(self, lines: &str) -> Self {
        self.table("[server]", lines)
    }

    /// `[trust]`: 127.0.0.1 is the trusted proxy ([`super::TRUSTED`]).
    pub fn trust_loopback(self) -> Self {
        self.table("[trust]", "proxies = [\"127.0.0.1/32\"]")
    }

    /// `[admin]` on an ephemeral loopback port.
    pub fn admin(self) -> Self {
        self.table("[admin]", "listen = \"127.0.0.1:0\"")
    }

    /// `[upstreams.<name>]` at `http://<addr>` (`addr` may carry a path).
    pub fn upstream(self, name: &str, addr: impl fmt::Display) -> Self {
        self.table(
            &format!("[upstreams.{name}]"),
            &format!("url = \"http://{addr}\""),
        )
    }

    /// `[upstreams.<name>]`: the built-in echo upstream.
    pub fn echo_upstream(self, name: &str) -> Self {
        self.table(&format!("[upstreams.{name}]"), "builtin = \"echo\"")
    }

    /// A `[[routes]]` entry: `prefix` to `upstream`.
    pub fn route(self, name: &str, prefix: &str, upstream: &str) -> Self {
        self.table(
            "[[routes]]",
            &format!("name = \"{name}\"\npath_prefix = \"{prefix}\"\nupstream = \"{upstream}\""),
        )
    }

    /// A route from `prefix` to `upstream` behind the auth provider `auth`.
    pub fn guarded_route(self, name: &str, prefix: &str, upstream: &str, auth: &str) -> Self {
        self.route(name, prefix, upstream)
            .with(&format!("auth = \"{auth}\""))
    }

    /// Upstream `name` at `addr`, and route `name` from `prefix` to it.
    pub fn route_to(self, name: &str, prefix: &str, addr: impl fmt::Display) -> Self {
        self.upstream(name, addr).route(name, prefix, name)
    }

    /// `[auth.providers.<name>]` of `kind`, with `lines`.
    pub fn provider(self, name: &str, kind: &str, lines: &str) -> Self {
        self.table(
            &format!("[auth.providers.{name}]"),
            &format!("kind = \"{kind}\""),
        )
        .with(lines)
    }

    /// `[auth.providers.<name>]`: a jwt provider for `issuer` and `audience` taking
    /// `algorithms` (as TOML: `["HS256"]`).
    pub fn jwt(self, name: &str, issuer: &str, audience: &str, algorithms: &str) -> Self {
        self.provider(
            name,
            "jwt",
            &format!("issuer = \"{issuer}\"\naudience = \"{audience}\"\nalgorithms = {algorithms}"),
        )
    }

    /// `[auth.providers.<name>]`: an oidc provider logging in at `issuer_url` as
    /// `client_id` with `client_secret` (as TOML: `{ file = "client.secret" }`), minting
    /// tokens with the jwt provider `mint`.
    pub fn oidc(
        self,
        name: &str,
        issuer_url: &str,
        client_id: &str,
        client_secret: &str,
        mint: &str,
    ) -> Self {
        self.provider(
            name,
            "oidc",
            &format!(
                "issuer_url = \"{issuer_url}\"\nclient_id = \"{client_id}\"\n\
                 client_secret = {client_secret}\nmint = \"{mint}\""
            ),
        )
    }

    pub fn text(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConfigText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ConfigText {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<ConfigText> for String {
    fn from(config: ConfigText) -> Self {
        config.0
    }
}

/// `/api` to upstream `api` at `api`, and `/` to upstream `ui` at `ui`.
pub fn api_and_ui(api: impl fmt::Display, ui: impl fmt::Display) -> ConfigText {
    ConfigText::new()
        .upstream("api", api)
        .upstream("ui", ui)
        .route("api", "/api", "api")
        .route("ui", "/", "ui")
}
