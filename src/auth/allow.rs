//! Who may come in: a route's `allow`, compiled. A user is admitted when any one listed
//! condition matches the verified claims (a bearer token's, or those a login session
//! keeps); a route without conditions has no `Allow` at all and admits every
//! authenticated user.
//!
//! The rules, after oauth2-proxy's `--email-domain` and `--allowed-group` and
//! Pomerium's `email`, `domain`, `groups` and `claim/...` criteria:
//!
//! - `emails`: the `email` claim, compared case-insensitively (IdPs do not agree on the
//!   case of what users typed, and no mail provider tells two cases apart);
//! - `email_domains`: the part of `email` after its last `@`, equal to a listed domain,
//!   case-insensitively; never a subdomain (`a@eu.example.com` is not `example.com`)
//!   and never a suffix match (`a@evilexample.com`);
//! - both refuse an `email` whose `email_verified` is `false` (or `"false"`, as some IdPs
//!   send it): an address the IdP has not verified is whatever the user typed. An
//!   `email_verified` that is absent says nothing either way, and is not held against
//!   the user (many IdPs only ever issue verified addresses, and omit the claim);
//! - `groups`: the provider's `groups_claim` as a list of strings (or one string) holding
//!   a listed group, compared exactly (group names and ids are identifiers);
//! - `claims`: the claim equal to a listed value or, when it is a list, holding one;
//!   strings compared exactly, numbers and booleans by their JSON text.

use serde_json::{Map, Value};

use crate::config::model;

/// A route's `allow`, ready for the request path: emails and domains lowercased once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    emails: Box<[String]>,
    email_domains: Box<[String]>,
    groups_claim: String,
    groups: Box<[String]>,
    claims: Box<[(String, Box<[String]>)]>,
}

impl Allow {
    /// The conditions of `settings`, with groups read from `groups_claim`; `None` when
    /// it lists none (every authenticated user is admitted).
    pub fn new(settings: &model::Allow, groups_claim: &str) -> Option<Self> {
        if settings.is_empty() {
            return None;
        }
        let lowercase = |items: &[String]| items.iter().map(|item| item.to_lowercase()).collect();
        Some(Self {
            emails: lowercase(&settings.emails),
            email_domains: lowercase(&settings.email_domains),
            groups_claim: groups_claim.to_owned(),
            groups: settings.groups.clone().into_boxed_slice(),
            claims: settings
                .claims
                .iter()
                .map(|(name, values)| (name.clone(), values.clone().into_boxed_slice()))
                .collect(),
        })
    }

    /// Whether `claims` meet any one condition.
    pub fn admits(&self, claims: &Map<String, Value>) -> bool {
        self.admits_by_email(claims)
            || (!self.groups.is_empty()
                && claims
                    .get(&self.groups_claim)
                    .is_some_and(|held| holds_any(held, &self.groups)))
            || self
                .claims
                .iter()
                .any(|(name, values)| claims.get(name).is_some_and(|held| holds_any(held, values)))
    }

    fn admits_by_email(&self, claims: &Map<String, Value>) -> bool {
        if self.emails.is_empty() && self.email_domains.is_empty() {
            return false;
        }
        let unverified = match claims.get("email_verified") {
            Some(Value::Bool(verified)) => !verified,
            Some(Value::String(text)) => text.eq_ignore_ascii_case("false"),
            _ => false,
        };
        let Some(email) = claims.get("email").and_then(Value::as_str) else {
            return false;
        };
        if unverified {
            return false;
        }
        let email = email.to_lowercase();
        if self.emails.contains(&email) {
            return true;
        }
        match email.rsplit_once('@') {
            Some((local, domain)) if !local.is_empty() => {
                self.email_domains.iter().any(|listed| listed == domain)
            }
            _ => false,
        }
    }

    /// The claims a login session must keep for these conditions to be checked later.
    pub fn needed_claims(settings: &model::Allow, groups_claim: &str) -> Vec<String> {
        let mut needed = Vec::new();
        if !settings.emails.is_empty() || !settings.email_domains.is_empty() {
            needed.extend(["email".to_owned(), "email_verified".to_owned()]);
        }
        if !settings.groups.is_empty() {
            needed.push(groups_claim.to_owned());
        }
        needed.extend(settings.claims.keys().cloned());
        needed
    }
}

/// Whether a claim's value is one of `listed`, or (a list) holds one of them.
fn holds_any(held: &Value, listed: &[String]) -> bool {
    match held {
        Value::Array(items) => items.iter().any(|item| is_one_of(item, listed)),
        value => is_one_of(value, listed),
    }
}

fn is_one_of(value: &Value, listed: &[String]) -> bool {
    match value {
        Value::String(text) => listed.iter().any(|item| item == text),
        Value::Number(_) | Value::Bool(_) => {
            let text = value.to_string();
            listed.contains(&text)
        }
        Value::Null | Value::Array(_) | Value::Object(_) => false,
    }
}

/// Who a refused user is logged in as, for the 403 page: the `email` claim, else
/// `name`, else `sub`.
pub fn display_name(claims: &Map<String, Value>, sub: &str) -> String {
    ["email", "name"]
        .iter()
        .filter_map(|name| claims.get(*name).and_then(Value::as_str))
        .find(|text| !text.trim().is_empty())
        .unwrap_or(sub)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn allow(conditions: Value) -> Allow {
        let settings: model::Allow = serde_json::from_value(conditions).unwrap();
        Allow::new(&settings, "roles").unwrap()
    }

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn an_allow_without_conditions_is_none() {
        assert_eq!(Allow::new(&model::Allow::default(), "groups"), None);
        let empty_lists: model::Allow =
            serde_json::from_value(json!({"emails": [], "claims": {}})).unwrap();
        assert_eq!(Allow::new(&empty_lists, "groups"), None);
    }

    #[test]
    fn emails_match_whole_addresses_in_any_case() {
        let allow = allow(json!({"emails": ["Ada@Example.com"]}));
        assert!(allow.admits(&claims(json!({"email": "ada@example.COM"}))));
        assert!(!allow.admits(&claims(json!({"email": "bob@example.com"}))));
        assert!(!allow.admits(&claims(json!({"email": "xada@example.com"}))));
        assert!(!allow.admits(&claims(json!({"sub": "ada@example.com"}))));
        assert!(!allow.admits(&claims(json!({"email": ["ada@example.com"]}))));
    }

    #[test]
    fn a_domain_is_what_follows_the_last_at_exactly() {
        let allow = allow(json!({"email_domains": ["example.com"]}));
        assert!(allow.admits(&claims(json!({"email": "ada@EXAMPLE.com"}))));
        assert!(allow.admits(&claims(json!({"email": "\"a@b\"@example.com"}))));
        for refused in [
            "ada@eu.example.com",
            "ada@evilexample.com",
            "ada@example.com.evil.test",
            "ada@example.com@evil.test",
            "@example.com",
            "example.com",
        ] {
            assert!(
                !allow.admits(&claims(json!({"email": refused}))),
                "{refused}"
            );
        }
    }

    #[test]
    fn an_address_the_idp_has_not_verified_matches_nothing() {
        let allow = allow(json!({"emails": ["ada@example.com"], "email_domains": ["example.com"]}));
        let with = |verified: Value| {
            claims(json!({"email": "ada@example.com", "email_verified": verified}))
        };
        assert!(!allow.admits(&with(json!(false))));
        assert!(!allow.admits(&with(json!("false"))));
        assert!(allow.admits(&with(json!(true))));
        assert!(allow.admits(&with(json!("true"))));
        assert!(allow.admits(&claims(json!({"email": "ada@example.com"}))));
    }

    #[test]
    fn groups_come_from_the_groups_claim_as_a_list_or_one_string() {
        let allow = allow(json!({"groups": ["admins", "42"]}));
        assert!(allow.admits(&claims(json!({"roles": ["staff", "admins"]}))));
        assert!(allow.admits(&claims(json!({"roles": "admins"}))));
        assert!(allow.admits(&claims(json!({"roles": [42]}))));
        assert!(!allow.admits(&claims(json!({"roles": ["Admins"]}))));
        assert!(!allow.admits(&claims(json!({"groups": ["admins"]}))));
        assert!(!allow.admits(&claims(json!({"roles": [["admins"]]}))));
        assert!(!allow.admits(&claims(json!({"roles": {"admins": true}}))));
    }

    #[test]
    fn claims_match_a_listed_value_and_any_one_condition_admits() {
        let allow = allow(json!({
            "claims": {"department": ["research"], "admin": ["true"]},
            "email_domains": ["example.com"],
        }));
        assert!(allow.admits(&claims(json!({"department": "research"}))));
        assert!(allow.admits(&claims(json!({"department": ["ops", "research"]}))));
        assert!(allow.admits(&claims(json!({"admin": true}))));
        assert!(allow.admits(&claims(
            json!({"email": "bob@example.com", "department": "ops"})
        )));
        assert!(!allow.admits(&claims(json!({"department": "Research", "admin": false}))));
        assert!(!allow.admits(&claims(json!({}))));
    }

    #[test]
    fn a_session_keeps_the_claims_its_conditions_read() {
        let settings: model::Allow = serde_json::from_value(json!({
            "email_domains": ["example.com"], "groups": ["a"], "claims": {"team": ["x"]}
        }))
        .unwrap();
        assert_eq!(
            Allow::needed_claims(&settings, "cognito:groups"),
            ["email", "email_verified", "cognito:groups", "team"]
        );
        assert_eq!(
            Allow::needed_claims(&model::Allow::default(), "groups"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_user_is_named_by_email_then_name_then_sub() {
        let both = claims(json!({"email": "ada@example.com", "name": "Ada"}));
        assert_eq!(display_name(&both, "u1"), "ada@example.com");
        assert_eq!(
            display_name(&claims(json!({"name": "Ada", "email": " "})), "u1"),
            "Ada"
        );
        assert_eq!(display_name(&claims(json!({"email": 7})), "u1"), "u1");
    }
}
