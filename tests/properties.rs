//! Property tests (proptest) of the security edge, against the real code:
//!
//! 1. the client address: a spoofed hop never wins unless every hop to its right is a
//!    trusted proxy;
//! 2. the upstream request headers: nothing hop-by-hop, nothing `Connection` lists, no
//!    client `Host`, no identity header, and from an untrusted peer no forwarding header;
//! 3. `RouteTable::find` equals a naive scan (segment-boundary prefixes, longest wins);
//! 4. a config printed as `fluxlit config` prints it loads as the same config, and
//!    compiles to the same route table.
//!
//! The policies come from configs compiled and built as a reload does (`build::compile_and_build`).
//! Case counts are modest so the normal test run stays fast; the fuzz targets in `fuzz/`
//! search the same invariants for longer.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use common::ConfigText;
use fluxlit::auth::secrets::Environment;
use fluxlit::build::compile_and_build;
use fluxlit::compile::CompileContext;
use fluxlit::config::{self, CheckedConfig, ConfigSource, SourceHash};
use fluxlit::header_sets;
use fluxlit::proxy::headers::{self, HeaderClass, RequestContext, X_FORWARDED_FOR};
use fluxlit::proxy::routes::{RouteTable, normalize_path};
use fluxlit::snapshot::Snapshot;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};

/// Every variable is set: `{ env = "..." }` secrets resolve without the real environment.
#[derive(Debug)]
struct AnyVariable;

impl Environment for AnyVariable {
    fn var(&self, _name: &str) -> Option<String> {
        Some("a-test-secret-that-is-long-enough-for-hs256".to_owned())
    }
}

fn source(text: &str) -> ConfigSource {
    ConfigSource {
        path: "properties.toml".into(),
        text: text.to_owned(),
        hash: SourceHash::of(text.as_bytes()),
    }
}

fn checked(text: &str) -> CheckedConfig {
    config::check(source(text))
        .unwrap_or_else(|err| panic!("invalid config {:?}:\n{text}", err.render()))
}

fn compiled(checked: CheckedConfig) -> Snapshot {
    let ctx = CompileContext::for_config(Path::new("properties.toml"), Arc::new(AnyVariable));
    compile_and_build(checked, None, 1, &ctx)
        .unwrap_or_else(|errors| panic!("does not compile: {errors:?}"))
}

fn snapshot(text: &str) -> Snapshot {
    compiled(checked(text))
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// 1. The client address

const TRUSTABLE: [&str; 4] = [
    "10.0.0.0/8",
    "192.168.1.0/24",
    "2001:db8::/32",
    "127.0.0.1/32",
];

/// Addresses inside and outside the nets above; `::ffff:10.1.2.3` is the IPv4 one.
const HOPS: [&str; 9] = [
    "10.1.2.3",
    "10.200.0.9",
    "192.168.1.5",
    "192.168.2.5",
    "203.0.113.7",
    "2001:db8::1",
    "2001:db9::1",
    "127.0.0.1",
    "::ffff:10.1.2.3",
];

fn hop() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        3 => select(&HOPS[..]).prop_map(|h| h.parse::<IpAddr>().unwrap()),
        1 => any::<[u8; 4]>().prop_map(IpAddr::from),
    ]
}

fn trust_config(proxies: &[&str]) -> String {
    let quoted: Vec<String> = proxies.iter().map(|p| format!("{p:?}")).collect();
    format!(
        "[trust]\nproxies = [{}]\n\n[upstreams.app]\nbuiltin = \"echo\"\n\n\
         [[routes]]\nname = \"root\"\npath_prefix = \"/\"\nupstream = \"app\"\n",
        quoted.join(", ")
    )
}

fn canonical(ip: IpAddr) -> IpAddr {
    fluxlit::peer::canonical_ip(ip)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_spoofed_hop_never_wins_over_an_untrusted_one(
        trusted in subsequence(&TRUSTABLE[..], 0..=TRUSTABLE.len()),
        chain in prop::collection::vec(hop(), 0..6),
        lines in 1usize..3,
        peer in hop(),
    ) {
        let snapshot = snapshot(&trust_config(&trusted));
        let policy = &snapshot.headers;
        // The chain as a client writes it, over one or more header lines.
        let mut client = HeaderMap::new();
        let texts: Vec<String> = chain.iter().map(IpAddr::to_string).collect();
        for part in texts.chunks(texts.len().div_ceil(lines).max(1)) {
            client.append(X_FORWARDED_FOR, HeaderValue::from_str(&part.join(", ")).unwrap());
        }

        // The spec: from the peer leftwards, each trusted hop hands over to the next; the
        // first hop that is not trusted is the client.
        let mut expected = canonical(peer);
        if policy.is_trusted(peer) {
            for ip in chain.iter().rev() {
                expected = canonical(*ip);
                if !policy.is_trusted(expected) {
                    break;
                }
            }
        }
        let found = headers::client_address(peer, &client, policy);
        prop_assert_eq!(found, expected);
        if found != canonical(peer) {
            let position = chain.iter().rposition(|ip| canonical(*ip) == found).unwrap();
            prop_assert!(chain[position + 1..].iter().all(|ip| policy.is_trusted(*ip)));
        }

        // What the upstream is told: a trusted peer's chain extended by the peer, anyone
        // else's replaced by the peer.
        let request_id = HeaderValue::from_static("id");
        let ctx = context(peer, policy.is_trusted(peer), false, &request_id);
        let route = snapshot.routes.find("/").unwrap();
        let host = HeaderValue::from_static("upstream");
        let mut out = HeaderMap::new();
        headers::upstream_request_headers(&client, policy, route, &host, &ctx, &mut out, &mut |_| {});
        let sent = out.get(X_FORWARDED_FOR).unwrap().to_str().unwrap();
        let peer_text = canonical(peer).to_string();
        if policy.is_trusted(peer) && !chain.is_empty() {
            prop_assert_eq!(sent, format!("{}, {peer_text}", texts.join(", ")));
        } else {
            prop_assert_eq!(sent, peer_text);
        }
    }
}

fn context<'a>(
    peer: IpAddr,
    trusted: bool,
    websocket: bool,
    request_id: &'a HeaderValue,
) -> RequestContext<'a> {
    RequestContext {
        peer: SocketAddr::new(peer, 50000),
        peer_trusted: trusted,
        scheme: "http",
        uri_authority: None,
        request_id,
        websocket,
        identity: None,
    }
}

// ---------------------------------------------------------------------------------------
// 2. The upstream request headers

/// A public path, a trusted network, a route allowlisting `x-tenant`, and a provider
/// with a claim header.
fn filter_config() -> String {
    ConfigText::new()
        .server("public_base_url = \"http://127.0.0.1:8080/app\"")
        .table("[trust]", "proxies = [\"10.0.0.0/8\"]")
        .echo_upstream("app")
        .route("root", "/", "app")
        .with("forward_client_headers = [\"x-tenant\"]")
        .jwt("main", "https://issuer.test", "test", "[\"HS256\"]")
        .with("hs256_secret = { env = \"SECRET\" }")
        .with("claim_headers = { email = \"x-fluxlit-email\" }")
        .into()
}

/// Names the policy treats specially, besides made-up ones.
const NAMES: [&str; 26] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-prefix",
    "x-real-ip",
    "x-request-id",
    "x-remote-user",
    "x-fluxlit-sub",
    "x-fluxlit-email",
    "x-tenant",
    "accept",
    "authorization",
    "cookie",
    "user-agent",
    "x-other",
    "close",
];

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (select(&NAMES[..]), any::<bool>())
            .prop_map(|(n, upper)| if upper { n.to_ascii_uppercase() } else { n.to_owned() }),
        1 => "[a-z][a-z0-9-]{0,10}",
    ]
}

/// One `Connection` line's bytes: tokens with odd spacing, sometimes ending in obs-text.
fn connection_line() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec((name(), select(&[",", ", ", " ,\t", ",,"][..])), 1..5),
        any::<bool>(),
    )
        .prop_map(|(tokens, obs_text)| {
            let mut bytes = Vec::new();
            for (token, separator) in tokens {
                bytes.extend_from_slice(token.as_bytes());
                bytes.extend_from_slice(separator.as_bytes());
            }
            if obs_text {
                bytes.extend_from_slice(b"\xe9t\xe9");
            }
            bytes
        })
}

/// The options a `Connection` header lists, lower-cased.
fn listed(client: &HeaderMap) -> HashSet<String> {
    client
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|t| String::from_utf8_lossy(t.trim_ascii()).to_ascii_lowercase())
        .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_filtered_header_is_never_forwarded(
        sent in prop::collection::vec((name(), "[ -~]{0,12}"), 0..12),
        connection in prop::collection::vec(connection_line(), 0..3),
        trusted_peer in any::<bool>(),
        websocket in any::<bool>(),
    ) {
        let snapshot = snapshot(&filter_config());
        let policy = &snapshot.headers;
        let mut client = HeaderMap::new();
        for (name, value) in &sent {
            client.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        for line in &connection {
            client.append(header::CONNECTION, HeaderValue::from_bytes(line).unwrap());
        }
        let peer: IpAddr = if trusted_peer { "10.0.0.2" } else { "203.0.113.9" }.parse().unwrap();
        prop_assert_eq!(policy.is_trusted(peer), trusted_peer);
        let request_id = HeaderValue::from_static("generated-id");
        let ctx = context(peer, trusted_peer, websocket, &request_id);
        let route = snapshot.routes.find("/").unwrap();
        let host = HeaderValue::from_static("upstream.internal");
        let mut unlisted = Vec::new();
        let mut out = HeaderMap::new();
        headers::upstream_request_headers(&client, policy, route, &host, &ctx, &mut out, &mut |name| {
            unlisted.push(name.clone());
        });

        // The names the gateway writes itself, with its own values (checked below).
        let mut own: HashSet<&str> = ["host", "x-forwarded-for", "x-forwarded-proto",
            "x-forwarded-host", "x-forwarded-prefix", "x-request-id"].into_iter().collect();
        if websocket {
            own.extend(["connection", "upgrade"]);
        }
        if trusted_peer {
            own.insert("forwarded");
        }
        for name in header_sets::HOP_BY_HOP {
            prop_assert!(own.contains(name) || !out.contains_key(*name), "{} forwarded", name);
        }
        for name in listed(&client) {
            prop_assert!(
                own.contains(name.as_str()) || !out.contains_key(name.as_str()),
                "{} is listed in Connection but was forwarded", name
            );
        }
        let hosts: Vec<_> = out.get_all(header::HOST).iter().collect();
        prop_assert_eq!(hosts, [&host]);
        for name in policy.classes.names(HeaderClass::Identity) {
            prop_assert!(!out.contains_key(name), "identity header {} forwarded", name);
        }
        if websocket {
            prop_assert_eq!(out.get_all(header::CONNECTION).iter().collect::<Vec<_>>(), ["upgrade"]);
            prop_assert_eq!(out.get_all(header::UPGRADE).iter().collect::<Vec<_>>(), ["websocket"]);
        }
        if !trusted_peer {
            prop_assert_eq!(out.get_all(X_FORWARDED_FOR).iter().collect::<Vec<_>>(), ["203.0.113.9"]);
            prop_assert_eq!(out.get_all("x-forwarded-proto").iter().collect::<Vec<_>>(), ["http"]);
            prop_assert_eq!(out.get_all("x-forwarded-prefix").iter().collect::<Vec<_>>(), ["/app"]);
            prop_assert_eq!(out.get_all("x-request-id").iter().collect::<Vec<_>>(), [&request_id]);
            for name in ["forwarded", "x-real-ip"] {
                prop_assert!(!out.contains_key(name), "{} from an untrusted peer", name);
            }
        }
        // The forward-auth user reaches no upstream as itself, from any peer.
        prop_assert!(!out.contains_key("x-remote-user"), "x-remote-user forwarded");
        // Reported as dropped: exactly the header lines in no class, not allowlisted and
        // not listed in `Connection`.
        let connection = listed(&client);
        let expected: Vec<&HeaderName> = client
            .iter()
            .map(|(name, _)| name)
            .filter(|name| {
                policy.classes.get(name).is_none()
                    && !route.extra_client_headers.contains(name)
                    && !connection.contains(name.as_str())
            })
            .collect();
        prop_assert_eq!(unlisted.iter().collect::<Vec<_>>(), expected);
        for name in &unlisted {
            prop_assert!(!out.contains_key(name), "{} reported dropped but forwarded", name);
            prop_assert!(
                !header_sets::HOP_BY_HOP.contains(&name.as_str())
                    && !header_sets::FORWARDING.contains(&name.as_str())
                    && name != "host",
                "{} dropped on purpose, reported as unlisted", name
            );
        }
        for name in out.keys() {
            let allowed = own.contains(name.as_str())
                || policy.classes.get(name) == Some(HeaderClass::Standard)
                || route.extra_client_headers.contains(name)
                || (trusted_peer && policy.classes.get(name) == Some(HeaderClass::TrustedOnly));
            prop_assert!(allowed, "{} is in no forwarded set", name);
        }
    }
}

// ---------------------------------------------------------------------------------------
// 3. Route matching

const SEGMENTS: [&str; 7] = ["a", "api", "ap", "v2", "x-y", "é", "%41"];

fn segments(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(select(&SEGMENTS[..]), 0..=max)
        .prop_map(|segments| format!("/{}", segments.join("/")))
}

/// The longest prefix that `path` starts with on a segment boundary: the definition.
fn naive<'a>(prefixes: &'a [String], path: &str) -> Option<&'a str> {
    prefixes
        .iter()
        .filter(|p| {
            p.as_str() == "/"
                || path == p.as_str()
                || path
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|p| p.len())
        .map(String::as_str)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn route_matching_equals_a_naive_scan(
        prefixes in prop::collection::hash_set(segments(3), 0..8),
        paths in prop::collection::vec((segments(5), "(/|/\\./|//|/\\.\\./a)?"), 1..16),
    ) {
        let prefixes: Vec<String> = prefixes
            .into_iter()
            .map(|p| normalize_path(&p).unwrap().into_owned())
            .collect();
        let table = RouteTable::new(prefixes.iter().map(|p| (p.clone(), Arc::new(p.clone()))));
        for (path, tail) in paths {
            let raw = format!("{path}{tail}");
            let Ok(path) = normalize_path(&raw) else { continue };
            let found = table.find(&path).map(|r| r.as_str());
            prop_assert_eq!(found, naive(&prefixes, &path), "path {}", path);
        }
    }
}

// ---------------------------------------------------------------------------------------
// 4. The config round trip

#[derive(Debug, Clone)]
struct GeneratedUpstream {
    url: Option<u16>,
    timeout_secs: u64,
}

#[derive(Debug, Clone)]
struct GeneratedRoute {
    prefix: String,
    upstream: usize,
    strip_prefix: bool,
    auth: Option<usize>,
    extra_headers: Vec<&'static str>,
}

#[derive(Debug, Clone)]
struct GeneratedConfig {
    base_path: Option<&'static str>,
    proxies: Vec<&'static str>,
    upstreams: Vec<GeneratedUpstream>,
    routes: Vec<GeneratedRoute>,
    providers: Vec<u64>,
}

fn generated_config() -> impl Strategy<Value = GeneratedConfig> {
    let upstream = (prop::option::of(1024u16..65000), 1u64..600)
        .prop_map(|(url, timeout_secs)| GeneratedUpstream { url, timeout_secs });
    let route = (
        segments(3),
        0usize..3,
        any::<bool>(),
        prop::option::of(0usize..2),
        subsequence(&["x-tenant", "x-trace-id", "x-debug"][..], 0..=3),
    )
        .prop_map(
            |(prefix, upstream, strip_prefix, auth, extra_headers)| GeneratedRoute {
                prefix,
                upstream,
                strip_prefix,
                auth,
                extra_headers,
            },
        );
    (
        prop::option::of(select(&["/", "/app", "/a/b/"][..])),
        subsequence(&TRUSTABLE[..], 0..=TRUSTABLE.len()),
        prop::collection::vec(upstream, 1..4),
        prop::collection::vec(route, 1..6),
        prop::collection::vec(0u64..120, 0..3),
    )
        .prop_map(|(base_path, proxies, upstreams, routes, providers)| {
            let mut seen = HashSet::new();
            let routes = routes
                .into_iter()
                .filter(|r| seen.insert(normalize_path(&r.prefix).unwrap().into_owned()))
                .collect();
            GeneratedConfig {
                base_path,
                proxies,
                upstreams,
                routes,
                providers,
            }
        })
}

impl GeneratedConfig {
    fn text(&self) -> String {
        let mut text = String::from("[server]\nlisten = \"127.0.0.1:0\"\n");
        if let Some(path) = self.base_path {
            text.push_str(&format!(
                "public_base_url = \"https://gateway.test{path}\"\n"
            ));
        }
        let proxies: Vec<String> = self.proxies.iter().map(|p| format!("{p:?}")).collect();
        text.push_str(&format!("\n[trust]\nproxies = [{}]\n", proxies.join(", ")));
        for (i, upstream) in self.upstreams.iter().enumerate() {
            text.push_str(&format!("\n[upstreams.u{i}]\n"));
            match upstream.url {
                Some(port) => text.push_str(&format!("url = \"http://127.0.0.1:{port}\"\n")),
                None => text.push_str("builtin = \"echo\"\n"),
            }
            text.push_str(&format!("timeout = \"{}s\"\n", upstream.timeout_secs));
        }
        for (i, route) in self.routes.iter().enumerate() {
            text.push_str(&format!(
                "\n[[routes]]\nname = \"r{i}\"\npath_prefix = {:?}\nupstream = \"u{}\"\n\
                 strip_prefix = {}\nforward_client_headers = {:?}\n",
                route.prefix,
                route.upstream % self.upstreams.len(),
                route.strip_prefix,
                route.extra_headers,
            ));
            if let Some(auth) = route.auth.filter(|_| !self.providers.is_empty()) {
                text.push_str(&format!("auth = \"p{}\"\n", auth % self.providers.len()));
            }
        }
        for (i, leeway) in self.providers.iter().enumerate() {
            text.push_str(&format!(
                "\n[auth.providers.p{i}]\nkind = \"jwt\"\nissuer = \"https://issuer{i}.test\"\n\
                 audience = [\"a{i}\", \"b\"]\nalgorithms = [\"HS256\"]\n\
                 hs256_secret = {{ env = \"SECRET_{i}\" }}\nleeway = \"{leeway}s\"\n"
            ));
        }
        text
    }
}

/// What `fluxlit config` prints for a loaded file.
fn printed(checked: &CheckedConfig) -> String {
    let toml = toml::to_string_pretty(&checked.config).expect("a loaded config prints");
    format!("# effective config of properties.toml\n{toml}")
}

/// A route table as the request path sees it: per route its name, prefix, upstream,
/// auth provider and allowlist.
fn route_table(snapshot: &Snapshot) -> Vec<String> {
    let mut routes: Vec<String> = snapshot
        .routes
        .routes()
        .map(|r| {
            format!(
                "{} {} strip={} -> {} auth={:?} extra={:?}",
                r.name,
                r.prefix,
                r.strip_prefix,
                r.upstream.name,
                r.auth.as_ref().map(|a| a.provider.name.to_string()),
                r.extra_client_headers
            )
        })
        .collect();
    routes.sort();
    routes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..config() })]

    #[test]
    fn a_printed_config_loads_and_compiles_to_the_same_routes(generated in generated_config()) {
        let first = checked(&generated.text());
        let text = printed(&first);
        let second = config::check(source(&text))
            .unwrap_or_else(|err| panic!("the printed config does not load {:?}:\n{text}", err.render()));
        prop_assert_eq!(&second.config, &first.config);

        let (first, second) = (compiled(first), compiled(second));
        prop_assert_eq!(route_table(&first), route_table(&second));
        for path in ["/", "/a", "/api/x", "/ap/v2/é", "/a/b/c", "/x-y/a"] {
            let name = |s: &Snapshot| s.routes.find(path).map(|r| r.name.to_string());
            prop_assert_eq!(name(&first), name(&second), "path {}", path);
        }
        prop_assert_eq!(&first.headers.trusted_proxies, &second.headers.trusted_proxies);
        prop_assert_eq!(&first.headers.forwarded_prefix, &second.headers.forwarded_prefix);
    }
}

/// A trusted proxy's `Forwarded` that is not text cannot be extended with the peer: it
/// is dropped, never passed on as if the proxy were the whole chain.
#[test]
fn a_trusted_forwarded_that_is_not_text_is_dropped() {
    let snapshot = snapshot(&filter_config());
    let policy = &snapshot.headers;
    let route = snapshot.routes.find("/").unwrap();
    let request_id = HeaderValue::from_static("id");
    let host = HeaderValue::from_static("upstream");
    for (value, sent) in [
        (&b"for=192.0.2.1"[..], Some("for=192.0.2.1, for=10.0.0.2")),
        (b"for=\"\xff\"", None),
    ] {
        let mut client = HeaderMap::new();
        client.insert(header::FORWARDED, HeaderValue::from_bytes(value).unwrap());
        let ctx = context("10.0.0.2".parse().unwrap(), true, false, &request_id);
        let mut out = HeaderMap::new();
        headers::upstream_request_headers(
            &client,
            policy,
            route,
            &host,
            &ctx,
            &mut out,
            &mut |_| {},
        );
        let forwarded: Vec<_> = out.get_all(header::FORWARDED).iter().collect();
        assert_eq!(forwarded, sent.into_iter().collect::<Vec<_>>(), "{value:?}");
    }
}
