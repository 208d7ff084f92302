//! `[doctor] accept`: the findings a deployment has accepted. An accepted finding stays
//! in the report, marked with the entry that accepted it, and `--strict` does not count
//! it; an entry that accepts nothing is a warning of its own, so acceptances do not
//! outlive what they were written for.
//!
//! An entry is a finding id (`admin_not_loopback`: wherever it occurs) or an id and a
//! key path (`admin_not_loopback@admin.listen`: at that key or below it). Errors cannot
//! be accepted: they are what stops the gateway from working as configured.

use serde::Serialize;

use super::{Finding, IDS, Severity, live};

/// An entry of `[doctor] accept` that accepted nothing in this run.
pub const ACCEPT_UNUSED: &str = "accept_unused";

/// Which entry accepted a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Acceptance {
    /// The entry's key path, e.g. `doctor.accept[0]`.
    pub by: String,
    /// The entry as written, e.g. `admin_not_loopback@admin.listen`.
    pub entry: String,
}

/// One entry, split into its id and key path.
struct Entry<'a> {
    id: &'a str,
    key: Option<&'a str>,
}

impl<'a> Entry<'a> {
    fn parse(text: &'a str) -> Self {
        match text.split_once('@') {
            Some((id, key)) => Self { id, key: Some(key) },
            None => Self {
                id: text,
                key: None,
            },
        }
    }

    fn matches(&self, finding: &Finding) -> bool {
        self.id == finding.id && self.key.is_none_or(|key| is_at_or_below(&finding.key, key))
    }
}

/// `key` is `at` or a key below it (`routes[0].name` is below `routes[0]` and `routes`,
/// not below `route`).
fn is_at_or_below(key: &str, at: &str) -> bool {
    key.strip_prefix(at)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Marks the findings `accept` accepts (each by the first entry that matches it), and
/// returns a warning for every entry that accepted none. `offline`: the network checks
/// did not run, so an entry for a finding only they make is not judged.
pub fn apply(accept: &[String], findings: &mut [Finding], offline: bool) -> Vec<Finding> {
    let entries: Vec<Entry<'_>> = accept.iter().map(|text| Entry::parse(text)).collect();
    let mut used = vec![false; entries.len()];
    let mut named_an_error = vec![false; entries.len()];
    for finding in findings.iter_mut() {
        let Some(index) = entries.iter().position(|entry| entry.matches(finding)) else {
            continue;
        };
        if finding.severity == Severity::Error {
            named_an_error[index] = true;
            continue;
        }
        used[index] = true;
        finding.accepted = Some(Box::new(Acceptance {
            by: format!("doctor.accept[{index}]"),
            entry: accept[index].clone(),
        }));
    }

    let mut unused = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        if used[index] {
            continue;
        }
        let text = &accept[index];
        let (message, fix) = if !IDS.contains(&entry.id) {
            let suggestion = crate::config::suggest(entry.id, IDS.iter().copied());
            (
                format!("no doctor check has the id {:?}", entry.id),
                match suggestion {
                    Some(id) => format!("did you mean {id:?}?"),
                    None => {
                        "use an id from the README's doctor table, or remove the entry".to_owned()
                    }
                },
            )
        } else if named_an_error[index] {
            (
                format!("{text:?} names an error, and errors cannot be accepted"),
                "fix what the error reports, then remove the entry".to_owned(),
            )
        } else if offline && live::NETWORK_IDS.contains(&entry.id) {
            // Only the network checks make it: without them there is nothing to judge.
            continue;
        } else {
            let place = entry
                .key
                .map(|key| format!(" at {key}"))
                .unwrap_or_default();
            (
                format!(
                    "{text:?} accepts nothing: no {} finding{place} occurs",
                    entry.id
                ),
                "remove the entry: what it accepted is gone (or was fixed)".to_owned(),
            )
        };
        unused.push(Finding::new(
            ACCEPT_UNUSED,
            Severity::Warning,
            format!("doctor.accept[{index}]"),
            message,
            fix,
        ));
    }
    unused
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(id: &'static str, severity: Severity, key: &str) -> Finding {
        Finding::new(id, severity, key, "m", "f")
    }

    #[test]
    fn an_entry_accepts_its_id_at_its_key_or_below_and_never_an_error() {
        let accept = [
            "admin_not_loopback".to_owned(),
            "forward_client_headers@routes[1]".to_owned(),
            "trust_all_proxies".to_owned(),
        ];
        let mut findings = [
            finding("admin_not_loopback", Severity::Warning, "admin.listen"),
            finding(
                "forward_client_headers",
                Severity::Warning,
                "routes[1].forward_client_headers[0]",
            ),
            finding(
                "forward_client_headers",
                Severity::Warning,
                "routes[10].forward_client_headers[0]",
            ),
            finding("trust_all_proxies", Severity::Error, "trust.proxies[0]"),
        ];
        let unused = apply(&accept, &mut findings, false);
        let by: Vec<Option<&str>> = findings
            .iter()
            .map(|f| f.accepted.as_ref().map(|a| a.by.as_str()))
            .collect();
        assert_eq!(
            by,
            [
                Some("doctor.accept[0]"),
                Some("doctor.accept[1]"),
                None,
                None
            ]
        );
        assert_eq!(unused.len(), 1, "{unused:#?}");
        assert_eq!(unused[0].key, "doctor.accept[2]");
        assert!(unused[0].message.contains("errors cannot be accepted"));
    }

    #[test]
    fn an_unknown_id_gets_a_suggestion_and_a_network_id_is_not_judged_offline() {
        let accept = ["admin_not_lopback".to_owned(), "clock_drift".to_owned()];
        let unused = apply(&accept, &mut [], true);
        assert_eq!(unused.len(), 1, "{unused:#?}");
        assert_eq!(unused[0].fix, "did you mean \"admin_not_loopback\"?");
        let online = apply(&accept, &mut [], false);
        assert_eq!(online.len(), 2, "{online:#?}");
        assert!(online[1].message.contains("accepts nothing"));
    }
}
