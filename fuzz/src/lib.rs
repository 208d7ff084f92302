//! What several fuzz targets share: a policy and a route built the way `compile` builds
//! them, and an environment where every variable is set.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use fluxlit::auth::secrets::Environment;
use fluxlit::config::model;
use fluxlit::header_sets;
use fluxlit::proxy::headers::{HeaderClass, HeaderClasses};
use fluxlit::proxy::headers::HeaderPolicy;
use fluxlit::proxy::route::{Route, Upstream, UpstreamTarget};
use http::{HeaderName, HeaderValue};
use ipnet::IpNet;

/// Every variable is set, so `{ env = "..." }` secrets resolve without the real
/// environment.
#[derive(Debug)]
pub struct AnyVariable;

pub const SECRET: &str = "fuzz-secret-that-is-long-enough-for-hs256";

impl Environment for AnyVariable {
    fn var(&self, _name: &str) -> Option<String> {
        Some(SECRET.to_owned())
    }
}

/// The header policy `compile` builds for a config with these trusted proxies and the
/// default header names.
pub fn policy(trusted_proxies: Vec<IpNet>) -> HeaderPolicy {
    let names = |list: &'static [&'static str], class| {
        list.iter()
            .map(move |n| (HeaderName::from_static(n), class))
    };
    let request_id = HeaderName::from_static("x-request-id");
    let remote_user = HeaderName::from_static("x-remote-user");
    let classes = HeaderClasses::new(
        [(remote_user.clone(), HeaderClass::Identity)]
            .into_iter()
            .chain(names(header_sets::GATEWAY_IDENTITY, HeaderClass::Identity))
            .chain(names(header_sets::FORWARDING, HeaderClass::TrustedOnly))
            .chain([(request_id.clone(), HeaderClass::TrustedOnly)])
            .chain(names(header_sets::HOP_BY_HOP, HeaderClass::Hop))
            .chain(names(header_sets::GATEWAY_HOP, HeaderClass::Hop))
            .chain(names(header_sets::STANDARD_REQUEST, HeaderClass::Standard)),
    );
    HeaderPolicy {
        trusted_proxies,
        classes,
        request_id,
        remote_user,
        forwarded_prefix: Some(HeaderValue::from_static("/app")),
        forwarded_host: None,
        listen_host: HeaderValue::from_static("127.0.0.1:8080"),
        security_headers: Default::default(),
        hsts: None,
    }
}

/// A route to the built-in echo upstream with `x-tenant` in its allowlist.
pub fn route() -> Route {
    Route {
        name: "fuzz".into(),
        auth: None,
        prefix: "/".to_owned(),
        strip_prefix: false,
        upstream: Arc::new(Upstream {
            name: "echo".into(),
            target: UpstreamTarget::Echo,
            timeout: Duration::from_secs(1),
            settings: model::Upstream::default(),
            health: None,
        }),
        extra_client_headers: Box::new([HeaderName::from_static("x-tenant")]),
        security_headers: Default::default(),
        metrics: Default::default(),
        unlisted_headers: Default::default(),
        max_request_body: model::Server::default().max_request_body.bytes(),
        websockets: None,
        websocket_idle_timeout: Duration::from_secs(3600),
        rate_limit: None,
    }
}

/// `::ffff:a.b.c.d` is `a.b.c.d`, as the gateway sees it.
pub fn canonical(ip: IpAddr) -> IpAddr {
    fluxlit::peer::canonical_ip(ip)
}
