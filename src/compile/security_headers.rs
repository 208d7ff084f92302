//! `security_headers` (server and per route) → the header lists responses get.
//!
//! Each route's list is built here once per snapshot; the request path only walks it.
//! A route without its own setting shares the server's list.

use http::{HeaderName, HeaderValue, header};

use crate::config::diagnostic::Diagnostic;
use crate::config::model::{SecurityHeaderValues, SecurityHeaders};
use crate::proxy::route::SecurityHeaderList;

const DEFAULT_X_CONTENT_TYPE_OPTIONS: &str = "nosniff";
const DEFAULT_REFERRER_POLICY: &str = "strict-origin-when-cross-origin";
// Streamlit frames nothing cross-origin, and its components are same-origin iframes.
const DEFAULT_FRAME_ANCESTORS: &str = "'self'";
const DEFAULT_PERMISSIONS_POLICY: &str = "camera=(), microphone=(), geolocation=()";

/// The values used when the file says `true`. No CSP: Streamlit needs inline scripts
/// and styles, so a default one would break it.
fn defaults() -> SecurityHeaderValues {
    SecurityHeaderValues {
        x_content_type_options: Some(DEFAULT_X_CONTENT_TYPE_OPTIONS.to_owned()),
        referrer_policy: Some(DEFAULT_REFERRER_POLICY.to_owned()),
        frame_ancestors: Some(DEFAULT_FRAME_ANCESTORS.to_owned()),
        permissions_policy: Some(DEFAULT_PERMISSIONS_POLICY.to_owned()),
        content_security_policy: None,
    }
}

/// Builds the server's list and the routes' lists.
#[derive(Debug)]
pub(super) struct SecurityHeaderCompiler {
    /// What a route's `true` or table starts from: the server's effective values, or the
    /// defaults where the server has `false`.
    route_base: SecurityHeaderValues,
    /// Added after the configurable headers wherever the server's are on (HSTS).
    extra: Vec<(HeaderName, HeaderValue)>,
    server: SecurityHeaderList,
}

impl SecurityHeaderCompiler {
    /// `extra` (HSTS) is added to every list but those of routes with `false`, and to the
    /// server's only when the server's headers are on.
    pub(super) fn new(
        setting: &SecurityHeaders,
        extra: Vec<(HeaderName, HeaderValue)>,
        errors: &mut Vec<Diagnostic>,
    ) -> Self {
        check_values("server.security_headers", setting, errors);
        let base = defaults();
        let server_values = effective(setting, &base);
        let extra = if setting.is_enabled() {
            extra
        } else {
            Vec::new()
        };
        let server = header_list(server_values.as_ref(), &extra);
        Self {
            route_base: server_values.unwrap_or(base),
            extra,
            server,
        }
    }

    /// The list of responses that match no route (and of routes without a setting).
    pub(super) fn server(&self) -> SecurityHeaderList {
        self.server.clone()
    }

    /// The list of `routes[index]`, whose setting is `setting`.
    pub(super) fn route(
        &self,
        index: usize,
        setting: Option<&SecurityHeaders>,
        errors: &mut Vec<Diagnostic>,
    ) -> SecurityHeaderList {
        let Some(setting) = setting else {
            return self.server();
        };
        check_values(
            &format!("routes[{index}].security_headers"),
            setting,
            errors,
        );
        header_list(effective(setting, &self.route_base).as_ref(), &self.extra)
    }
}

/// The values in force: none for `false`, `base` for `true`, `base` overlaid by a table.
fn effective(
    setting: &SecurityHeaders,
    base: &SecurityHeaderValues,
) -> Option<SecurityHeaderValues> {
    match setting {
        SecurityHeaders::Enabled(false) => None,
        SecurityHeaders::Enabled(true) => Some(base.clone()),
        SecurityHeaders::Custom(own) => {
            let pick = |own: &Option<String>, base: &Option<String>| own.clone().or(base.clone());
            Some(SecurityHeaderValues {
                x_content_type_options: pick(
                    &own.x_content_type_options,
                    &base.x_content_type_options,
                ),
                referrer_policy: pick(&own.referrer_policy, &base.referrer_policy),
                frame_ancestors: pick(&own.frame_ancestors, &base.frame_ancestors),
                permissions_policy: pick(&own.permissions_policy, &base.permissions_policy),
                content_security_policy: pick(
                    &own.content_security_policy,
                    &base.content_security_policy,
                ),
            })
        }
    }
}

/// Reports the values of a table that cannot be sent as a header, at their key path.
fn check_values(path: &str, setting: &SecurityHeaders, errors: &mut Vec<Diagnostic>) {
    let SecurityHeaders::Custom(values) = setting else {
        return;
    };
    let keys = [
        ("x_content_type_options", &values.x_content_type_options),
        ("referrer_policy", &values.referrer_policy),
        ("frame_ancestors", &values.frame_ancestors),
        ("permissions_policy", &values.permissions_policy),
        ("content_security_policy", &values.content_security_policy),
    ];
    for (key, value) in keys {
        if let Some(value) = value
            && HeaderValue::from_str(value).is_err()
        {
            errors.push(Diagnostic::error(
                format!("{path}.{key}"),
                format!("{value:?} cannot be sent as a header value: use visible ASCII only"),
            ));
        }
    }
}

/// The headers for `values` (none when off), then `extra`. Empty values are left out;
/// invalid ones were reported by [`check_values`] and are left out too.
fn header_list(
    values: Option<&SecurityHeaderValues>,
    extra: &[(HeaderName, HeaderValue)],
) -> SecurityHeaderList {
    let Some(values) = values else {
        return SecurityHeaderList::default();
    };
    let present = |value: &Option<String>| -> Option<String> {
        value
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let frame_ancestors = present(&values.frame_ancestors);
    let csp = match (present(&values.content_security_policy), &frame_ancestors) {
        (Some(csp), Some(sources)) if !csp.contains("frame-ancestors") => Some(format!(
            "{}; frame-ancestors {sources}",
            csp.trim_end_matches([';', ' '])
        )),
        (Some(csp), _) => Some(csp),
        (None, Some(sources)) => Some(format!("frame-ancestors {sources}")),
        (None, None) => None,
    };
    let frame_options = frame_ancestors
        .as_deref()
        .and_then(|sources| match sources {
            "'self'" => Some("SAMEORIGIN".to_owned()),
            "'none'" => Some("DENY".to_owned()),
            _ => None,
        });
    let wanted = [
        (
            header::X_CONTENT_TYPE_OPTIONS,
            present(&values.x_content_type_options),
        ),
        (header::CONTENT_SECURITY_POLICY, csp),
        (header::X_FRAME_OPTIONS, frame_options),
        (header::REFERRER_POLICY, present(&values.referrer_policy)),
        (
            HeaderName::from_static("permissions-policy"),
            present(&values.permissions_policy),
        ),
    ];
    let mut list: Vec<(HeaderName, HeaderValue)> = wanted
        .into_iter()
        .filter_map(|(name, value)| Some((name, HeaderValue::from_str(&value?).ok()?)))
        .collect();
    list.extend(extra.iter().cloned());
    SecurityHeaderList::from(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_and_values(list: &SecurityHeaderList) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect()
    }

    fn table(toml_text: &str) -> SecurityHeaders {
        SecurityHeaders::Custom(toml::from_str(toml_text).unwrap())
    }

    #[test]
    fn true_gives_the_defaults_and_no_csp_beyond_frame_ancestors() {
        let mut errors = Vec::new();
        let compiler =
            SecurityHeaderCompiler::new(&SecurityHeaders::Enabled(true), Vec::new(), &mut errors);
        assert!(errors.is_empty());
        assert_eq!(
            names_and_values(&compiler.server()),
            [
                ("x-content-type-options", "nosniff"),
                ("content-security-policy", "frame-ancestors 'self'"),
                ("x-frame-options", "SAMEORIGIN"),
                ("referrer-policy", "strict-origin-when-cross-origin"),
                (
                    "permissions-policy",
                    "camera=(), microphone=(), geolocation=()"
                ),
            ]
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn a_route_table_replaces_the_servers_values_and_empty_removes() {
        let mut errors = Vec::new();
        let server = table("referrer_policy = \"no-referrer\"");
        let compiler = SecurityHeaderCompiler::new(&server, Vec::new(), &mut errors);
        let route = table(
            "permissions_policy = \"\"\ncontent_security_policy = \"default-src 'self';\"\nframe_ancestors = \"'none'\"",
        );
        let list = names_and_values(&compiler.route(0, Some(&route), &mut errors));
        assert!(errors.is_empty(), "{errors:?}");
        let get = |name: &str| {
            list.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            get("referrer-policy"),
            Some("no-referrer"),
            "the server's value is inherited"
        );
        assert_eq!(get("permissions-policy"), None);
        assert_eq!(
            get("content-security-policy"),
            Some("default-src 'self'; frame-ancestors 'none'")
        );
        assert_eq!(get("x-frame-options"), Some("DENY"));
    }

    #[test]
    fn false_on_a_route_gives_nothing_not_even_hsts_and_true_where_the_server_is_off_gives_defaults()
     {
        let hsts = vec![(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=1"),
        )];
        let mut errors = Vec::new();
        let on =
            SecurityHeaderCompiler::new(&SecurityHeaders::Enabled(true), hsts.clone(), &mut errors);
        assert!(
            on.route(0, Some(&SecurityHeaders::Enabled(false)), &mut errors)
                .is_empty()
        );
        assert!(
            on.route(0, None, &mut errors)
                .iter()
                .any(|(n, _)| n == header::STRICT_TRANSPORT_SECURITY)
        );

        let off = SecurityHeaderCompiler::new(&SecurityHeaders::Enabled(false), hsts, &mut errors);
        assert!(off.server().is_empty());
        let list = off.route(0, Some(&SecurityHeaders::Enabled(true)), &mut errors);
        assert_eq!(list.len(), 5, "the defaults, without HSTS: {list:?}");
    }

    #[test]
    fn a_value_that_is_no_header_value_is_an_error_at_its_key() {
        let mut errors = Vec::new();
        let compiler =
            SecurityHeaderCompiler::new(&SecurityHeaders::Enabled(true), Vec::new(), &mut errors);
        let route = table("referrer_policy = \"a\\nb\"");
        compiler.route(3, Some(&route), &mut errors);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "routes[3].security_headers.referrer_policy");
    }
}
