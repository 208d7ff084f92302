//! A route's `allow`: who may come in. It needs a provider with verified claims to check
//! (jwt or oidc), and every condition it lists must be one that can match someone.

use super::super::diagnostic::Diagnostic;
use super::super::model::{Allow, Config, ProviderKind, Route};

/// The `allow` of `routes[index]`, if it has one.
pub(super) fn check_allow(
    config: &Config,
    index: usize,
    route: &Route,
    found: &mut Vec<Diagnostic>,
) {
    let Some(allow) = &route.allow else {
        return;
    };
    let path = format!("routes[{index}].allow");
    match route
        .auth
        .as_deref()
        .map(|name| (name, config.auth.providers.get(name)))
    {
        None => found.push(
            Diagnostic::error(
                &path,
                "allow needs `auth`: without a provider there is no verified user to check",
            )
            .with_help("add auth = \"PROVIDER\", naming a jwt or oidc provider"),
        ),
        Some((name, Some(provider))) if provider.kind == ProviderKind::TrustedProxyUser => {
            found.push(
                Diagnostic::error(
                    &path,
                    format!(
                        "provider {name:?} (trusted_proxy_user) vouches for a user name only: \
                         there are no claims to check"
                    ),
                )
                .with_help(
                    "decide who may come in at the proxy in front, or use a jwt or oidc \
                     provider",
                ),
            );
        }
        Some((name, Some(provider))) => {
            let emails_used = !allow.emails.is_empty() || !allow.email_domains.is_empty();
            let asks_email = provider.scopes.iter().any(|scope| scope == "email");
            if provider.kind == ProviderKind::Oidc && emails_used && !asks_email {
                found.push(
                    Diagnostic::warning(
                        &path,
                        format!(
                            "the identity provider usually sends `email` only for the scope \
                             \"email\", which provider {name:?} does not ask for: nobody \
                             would match emails or email_domains"
                        ),
                    )
                    .with_help("add \"email\" to the provider's scopes"),
                );
            }
        }
        // An unknown provider is reported at `auth`.
        Some((_, None)) => {}
    }
    check_conditions(&path, allow, found);
}

/// Each listed value: not empty, and of a form that can match.
fn check_conditions(path: &str, allow: &Allow, found: &mut Vec<Diagnostic>) {
    if allow.is_empty() {
        found.push(
            Diagnostic::warning(
                path,
                "lists no condition: every authenticated user is admitted",
            )
            .with_help("list emails, email_domains, groups or claims, or remove allow"),
        );
    }
    let empty = |key: String| Diagnostic::error(key, "must not be empty");
    for (index, email) in allow.emails.iter().enumerate() {
        let key = format!("{path}.emails[{index}]");
        if email.is_empty() {
            found.push(empty(key));
        } else if !email.contains('@') || email.contains(char::is_whitespace) {
            found.push(
                Diagnostic::error(key, format!("{email:?} is not an email address"))
                    .with_help("list whole addresses, or the domain in email_domains"),
            );
        }
    }
    for (index, domain) in allow.email_domains.iter().enumerate() {
        let key = format!("{path}.email_domains[{index}]");
        if domain.is_empty() {
            found.push(empty(key));
        } else if domain.contains('@') || domain.contains(char::is_whitespace) {
            found.push(
                Diagnostic::error(key, format!("{domain:?} is not a domain"))
                    .with_help("write the part after the '@' alone, e.g. \"example.com\""),
            );
        } else if domain.starts_with(['.', '*']) {
            found.push(
                Diagnostic::error(
                    key,
                    format!("{domain:?}: a domain matches exactly, never its subdomains"),
                )
                .with_help("list each domain, e.g. \"example.com\", \"eu.example.com\""),
            );
        }
    }
    for (index, group) in allow.groups.iter().enumerate() {
        if group.is_empty() {
            found.push(empty(format!("{path}.groups[{index}]")));
        }
    }
    for (claim, values) in &allow.claims {
        let key = format!("{path}.claims.{claim}");
        if claim.is_empty() {
            found.push(Diagnostic::error(&key, "a claim name must not be empty"));
        }
        if values.is_empty() {
            found.push(
                Diagnostic::error(&key, "lists no value: it could never admit anyone")
                    .with_help("list the values that admit, e.g. [\"research\"], or remove it"),
            );
        }
        for (index, value) in values.iter().enumerate() {
            if value.is_empty() {
                found.push(empty(format!("{key}[{index}]")));
            }
        }
    }
}

/// A provider's `groups_claim`: a claim name.
pub(super) fn check_groups_claim(path: &str, claim: Option<&str>, found: &mut Vec<Diagnostic>) {
    if claim.is_some_and(str::is_empty) {
        found.push(
            Diagnostic::error(format!("{path}.groups_claim"), "must not be empty")
                .with_help("leave it out for \"groups\", or name the claim, e.g. \"roles\""),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{ConfigSource, SourceHash, check};

    const PROVIDERS: &str = r#"
[upstreams.app]
builtin = "echo"

[auth.providers.main]
kind = "jwt"
issuer = "https://issuer.example"
audience = "api"
algorithms = ["HS256"]
hs256_secret = { env = "HS" }

[auth.providers.proxy]
kind = "trusted_proxy_user"
trusted_peers = ["127.0.0.1/32"]
"#;

    /// Every error and warning of `text`, rendered as `fluxlit validate` prints them.
    fn diagnostics_of(text: String) -> Vec<String> {
        let source = ConfigSource {
            path: "fluxlit.toml".into(),
            hash: SourceHash::of(text.as_bytes()),
            text,
        };
        match check(source) {
            Ok(checked) => checked
                .warnings
                .iter()
                .map(|d| d.render(Path::new("fluxlit.toml")))
                .collect(),
            Err(error) => error.render(),
        }
    }

    /// The diagnostics of a file with one route (`route`: its lines after `upstream`)
    /// and the providers `main` (jwt) and `proxy` (trusted_proxy_user).
    fn diagnostics(route: &str) -> Vec<String> {
        diagnostics_of(format!(
            "[[routes]]\nname = \"app\"\npath_prefix = \"/\"\nupstream = \"app\"\n{route}\n\
             {PROVIDERS}"
        ))
    }

    fn assert_reports(found: &[String], expected: &[&str]) {
        for wanted in expected {
            assert!(
                found.iter().any(|line| line.contains(wanted)),
                "{wanted:?} not in {found:#?}"
            );
        }
    }

    #[test]
    fn an_allow_with_conditions_of_every_kind_loads() {
        let route = "auth = \"main\"\nallow = { emails = [\"ada@example.com\"], email_domains = \
                     [\"example.com\"], groups = [\"staff\"], claims = { department = \
                     [\"research\"] } }";
        assert_eq!(diagnostics(route), Vec::<String>::new());
    }

    #[test]
    fn an_allow_needs_a_provider_with_claims() {
        assert_reports(
            &diagnostics("allow = { groups = [\"staff\"] }"),
            &["fluxlit.toml:5:9: error: routes[0].allow: allow needs `auth`"],
        );
        assert_reports(
            &diagnostics("auth = \"proxy\"\nallow = { groups = [\"staff\"] }"),
            &["error: routes[0].allow: provider \"proxy\" (trusted_proxy_user)"],
        );
    }

    #[test]
    fn unknown_keys_and_empty_values_are_refused_at_their_key_paths() {
        let found = diagnostics(
            "auth = \"main\"\nallow = { email = [\"ada@example.com\"], groups = [\"\"], \
             claims = { department = [], \"\" = [\"x\"], team = [\"a\", \"\"] } }",
        );
        assert_reports(
            &found,
            &[
                "error: routes[0].allow.email: unknown key",
                "error: routes[0].allow.groups[0]: must not be empty",
                "error: routes[0].allow.claims.department: lists no value",
                "error: routes[0].allow.claims.: a claim name must not be empty",
                "error: routes[0].allow.claims.team[1]: must not be empty",
            ],
        );
    }

    #[test]
    fn emails_and_domains_must_be_of_a_form_that_can_match() {
        let found = diagnostics(
            "auth = \"main\"\nallow = { emails = [\"\", \"ada\"], email_domains = \
             [\"@example.com\", \".example.com\", \"*.example.com\", \"\"] }",
        );
        assert_reports(
            &found,
            &[
                "routes[0].allow.emails[0]: must not be empty",
                "routes[0].allow.emails[1]: \"ada\" is not an email address",
                "routes[0].allow.email_domains[0]: \"@example.com\" is not a domain",
                "routes[0].allow.email_domains[1]: \".example.com\": a domain matches exactly",
                "routes[0].allow.email_domains[2]: \"*.example.com\": a domain matches exactly",
                "routes[0].allow.email_domains[3]: must not be empty",
            ],
        );
    }

    #[test]
    fn an_allow_that_lists_nothing_is_warned_about() {
        assert_reports(
            &diagnostics("auth = \"main\"\nallow = { groups = [] }"),
            &[
                "warning: routes[0].allow: lists no condition: every authenticated user is \
               admitted",
            ],
        );
    }

    #[test]
    fn a_groups_claim_is_a_name_and_only_for_providers_with_claims() {
        let with = |jwt_line: &str, proxy_line: &str| {
            let providers = PROVIDERS
                .replace(
                    "{ env = \"HS\" }",
                    &format!("{{ env = \"HS\" }}\n{jwt_line}"),
                )
                .replace(
                    "[\"127.0.0.1/32\"]",
                    &format!("[\"127.0.0.1/32\"]\n{proxy_line}"),
                );
            diagnostics_of(format!(
                "[[routes]]\nname = \"app\"\npath_prefix = \"/\"\nupstream = \"app\"\n\
                 auth = \"main\"\n{providers}"
            ))
        };
        assert_eq!(with("groups_claim = \"roles\"", ""), Vec::<String>::new());
        assert_reports(
            &with("groups_claim = \"\"", "groups_claim = \"roles\""),
            &[
                "error: auth.providers.main.groups_claim: must not be empty",
                "error: auth.providers.proxy.groups_claim: `groups_claim` applies to kind = \
                 \"jwt\" or \"oidc\" only",
            ],
        );
    }
}
