//! Bearer tokens at the edge, as a client and an upstream observe them: every JOSE trick
//! in the book is refused with `401` and an RFC 6750 `invalid_token` challenge before
//! the upstream is contacted; well-made HS256, RS256 and ES256 tokens get through;
//! `required_scopes` answers `403 insufficient_scope`; the upstream learns who the
//! client is only from the gateway (`x-fluxlit-sub`, `x-fluxlit-scope`, `claim_headers`),
//! never from the client; and forward auth believes `x-remote-user` only from its
//! `trusted_peers` (by default the trusted proxies), and never forwards it as such.
//!
//! Real sockets on loopback, a real axum upstream that counts what reaches it, the test
//! keys of `tests/fixtures/jose`. 127.0.0.1 is the trusted proxy where there is one and
//! 127.0.0.2 an ordinary client. Timeouts only guard against hangs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use common::auth::*;
use common::*;
use jsonwebtoken::Algorithm;
use serde_json::json;

// ---------------------------------------------------------------------------------------
// The gateway of the JOSE tests.
// ---------------------------------------------------------------------------------------

/// The realm of provider `hs`; the other providers use the default (their name).
const REALM: &str = "fluxlit-test";
/// The HS256 secret of provider `mixed` (which also accepts RS256).
const MIXED_SECRET: &str = "another test-only secret, for the mixed provider";

/// One gateway, one counting upstream, four providers on four routes:
///
/// | route    | provider | accepts                         |
/// |----------|----------|---------------------------------|
/// | `/hs`    | `hs`     | HS256 ([`HS_SECRET`])           |
/// | `/rs`    | `rs`     | RS256 from a `jwks_file`        |
/// | `/es`    | `es`     | ES256 from the same file        |
/// | `/mixed` | `mixed`  | HS256 ([`MIXED_SECRET`]), RS256 |
///
/// The JWKS file holds rsa-a and ec-a (never rsa-b). Leeway is 0 s everywhere, and
/// `max_header_size` is large enough for a 64 KiB token to reach the check.
struct Jose {
    gateway: TestGateway,
    upstream: CountingUpstream,
}

impl Jose {
    async fn start() -> Self {
        let upstream = CountingUpstream::spawn().await;
        let hs_keys = format!("hs256_secret = {{ file = \"hs.secret\" }}\nrealm = \"{REALM}\"");
        let providers = [
            ("hs", "[\"HS256\"]", hs_keys.as_str()),
            ("rs", "[\"RS256\"]", "jwks_file = \"keys.jwks.json\""),
            ("es", "[\"ES256\"]", "jwks_file = \"keys.jwks.json\""),
            (
                "mixed",
                "[\"HS256\", \"RS256\"]",
                "hs256_secret = { file = \"mixed.secret\" }\njwks_file = \"keys.jwks.json\"",
            ),
        ];
        let mut config = ConfigText::new()
            .server("max_header_size = \"256KiB\"")
            .upstream("app", upstream.addr);
        for (name, _, _) in providers {
            config = config.guarded_route(name, &format!("/{name}"), "app", name);
        }
        for (name, algorithms, keys) in providers {
            config = config
                .jwt_provider(name, algorithms, keys)
                .with("leeway = \"0s\"");
        }
        let keys = jwks(&[RSA_A_JWK, EC_A_JWK]);
        let gateway = start_with_files(
            &config,
            &[
                ("hs.secret", HS_SECRET),
                ("mixed.secret", MIXED_SECRET),
                ("keys.jwks.json", &keys),
            ],
        )
        .await;
        Self { gateway, upstream }
    }

    /// Sends `token` to `path`, expects 401 `invalid_token` naming `reason` in `realm`.
    async fn assert_refused(&self, path: &str, realm: &str, token: &str, reason: &str) {
        let before = self.upstream.hits();
        let reply = get_with_token(&self.gateway, path, token).await;
        assert_invalid_token(&reply, realm, reason);
        assert_eq!(
            self.upstream.hits(),
            before,
            "a refused token never reaches the upstream"
        );
    }

    /// Sends `Authorization: <authorization>` to `path` from an untrusted client: 401
    /// with an `invalid_token` challenge, and nothing reaches the upstream. The
    /// challenge; `context` names the case in failures.
    async fn assert_invalid(&self, path: &str, authorization: &str, context: &str) -> Challenge {
        let before = self.upstream.hits();
        let reply = get_from(
            UNTRUSTED,
            &self.gateway,
            path,
            &[("authorization", authorization)],
        )
        .await;
        assert_eq!(reply.status, 401, "{context}: {}", reply.text());
        let challenge = challenge_of(&reply.headers);
        assert_eq!(challenge.param("error"), Some("invalid_token"), "{context}");
        assert_eq!(self.upstream.hits(), before, "{context}");
        challenge
    }

    /// Tokens signed HS256 with the RSA public key's PEM as the secret, with and without
    /// the RSA key's kid, are refused on `path` for `reason`.
    async fn assert_pem_as_hmac_secret_refused(&self, path: &str, realm: &str, reason: &str) {
        for kid in [None, Some("rsa-a")] {
            let forged = token(
                Algorithm::HS256,
                kid,
                Key::Hmac(RSA_A_PUB_PEM.as_bytes()),
                &claims("mallory"),
            );
            self.assert_refused(path, realm, &forged, reason).await;
        }
    }

    /// `claims` signed for `/hs` (HS256) and for `/rs` (RS256) are refused for `reason`.
    async fn assert_both_refuse(&self, claims: &serde_json::Value, reason: &str) {
        self.assert_refused("/hs/x", REALM, &hs256(claims), reason)
            .await;
        self.assert_refused("/rs/x", "rs", &rs256_a(claims), reason)
            .await;
    }

    /// Sends `token` to `path`, expects the upstream to answer for `sub`.
    async fn assert_accepted(&self, path: &str, token: &str, sub: &str) {
        let before = self.upstream.hits();
        let reply = get_with_token(&self.gateway, path, token).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert_eq!(reply.upstream_header("x-fluxlit-sub"), [sub], "{path}");
        assert_eq!(self.upstream.hits(), before + 1);
    }
}

// ---------------------------------------------------------------------------------------
// Positive controls: well-made tokens get through.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn valid_hs256_rs256_and_es256_tokens_reach_the_upstream_as_their_subject() {
    let jose = Jose::start().await;
    jose.assert_accepted("/hs/x", &hs256(&claims("ada")), "ada")
        .await;
    jose.assert_accepted("/rs/x", &rs256_a(&claims("grace")), "grace")
        .await;
    let es = token(Algorithm::ES256, Some("ec-a"), Key::EcA, &claims("edsger"));
    jose.assert_accepted("/es/x", &es, "edsger").await;

    // The mixed provider takes both of its kinds, each with its own key.
    let mixed_hs = token(
        Algorithm::HS256,
        None,
        Key::Hmac(MIXED_SECRET.as_bytes()),
        &claims("barbara"),
    );
    jose.assert_accepted("/mixed/x", &mixed_hs, "barbara").await;
    jose.assert_accepted("/mixed/x", &rs256_a(&claims("alan")), "alan")
        .await;
}

#[tokio::test]
async fn a_request_without_a_token_gets_a_bare_bearer_challenge() {
    let jose = Jose::start().await;
    let reply = get_from(UNTRUSTED, &jose.gateway, "/hs/x", &[]).await;
    assert_missing_token(&reply, REALM);
    // Without `realm`, the provider's name is the realm.
    let reply = get_from(UNTRUSTED, &jose.gateway, "/rs/x", &[]).await;
    assert_missing_token(&reply, "rs");
    assert_eq!(jose.upstream.hits(), 0);
}

// ---------------------------------------------------------------------------------------
// Algorithm attacks.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_alg_none_token_is_refused_with_or_without_a_signature_part() {
    let jose = Jose::start().await;
    for alg in ["none", "None", "NONE"] {
        let unsigned = signing_input(&json!({"alg": alg, "typ": "JWT"}), &claims("mallory"));
        for token in [format!("{unsigned}."), unsigned.clone()] {
            for (path, realm) in [("/hs/x", REALM), ("/rs/x", "rs"), ("/mixed/x", "mixed")] {
                let context = format!("alg {alg} on {path}");
                let challenge = jose.assert_invalid(path, &bearer(&token), &context).await;
                assert_eq!(challenge.param("realm"), Some(realm));
                assert!(challenge.param("error_description").is_some());
            }
        }
    }
    // With a (meaningless) signature part as well.
    let signed_none = format!(
        "{}.{}",
        signing_input(&json!({"alg": "none"}), &claims("mallory")),
        b64(b"signature")
    );
    jose.assert_refused("/hs/x", REALM, &signed_none, "malformed")
        .await;
}

#[tokio::test]
async fn an_hs256_token_keyed_with_the_rsa_public_key_is_refused_by_an_rs256_provider() {
    let jose = Jose::start().await;
    // Key confusion: the attacker knows the public key and uses its PEM as an HMAC secret,
    // hoping the verifier picks "the key" and lets the token's alg decide how to use it.
    jose.assert_pem_as_hmac_secret_refused("/rs/x", "rs", "algorithm is not accepted")
        .await;
    // The same with the public key as a JWK document, and as the PEM without its newline.
    for secret in [RSA_A_JWK.as_bytes(), RSA_A_PUB_PEM.trim().as_bytes()] {
        let forged = token(
            Algorithm::HS256,
            Some("rsa-a"),
            Key::Hmac(secret),
            &claims("m"),
        );
        jose.assert_refused("/rs/x", "rs", &forged, "algorithm is not accepted")
            .await;
    }
}

#[tokio::test]
async fn an_hs256_token_keyed_with_the_rsa_public_key_is_refused_by_a_provider_taking_both() {
    let jose = Jose::start().await;
    // Here HS256 is accepted, but only with the provider's own secret: the JWKS is never
    // used as HMAC key material.
    jose.assert_pem_as_hmac_secret_refused("/mixed/x", "mixed", "signature does not verify")
        .await;
}

#[tokio::test]
async fn an_algorithm_outside_the_pinned_list_is_refused_even_with_the_right_key() {
    let jose = Jose::start().await;
    let secret = Key::Hmac(HS_SECRET.as_bytes());
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let other_alg = token(alg, None, secret, &claims("mallory"));
        jose.assert_refused("/hs/x", REALM, &other_alg, "algorithm is not accepted")
            .await;
    }
    // An RS256 token (valid for /rs) is not accepted by the HS-only provider either,
    // nor an ES256 one (valid for /es) by the RS-only provider.
    jose.assert_refused(
        "/hs/x",
        REALM,
        &rs256_a(&claims("m")),
        "algorithm is not accepted",
    )
    .await;
    let es = token(Algorithm::ES256, Some("ec-a"), Key::EcA, &claims("m"));
    jose.assert_refused("/rs/x", "rs", &es, "algorithm is not accepted")
        .await;
    // PS256 with the right RSA key: same family, still not on the list.
    let ps = token(Algorithm::PS256, Some("rsa-a"), Key::RsaA, &claims("m"));
    jose.assert_refused("/rs/x", "rs", &ps, "algorithm is not accepted")
        .await;
}

// ---------------------------------------------------------------------------------------
// Signatures and claims.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_payload_changed_after_signing_is_refused() {
    let jose = Jose::start().await;
    for (path, realm, genuine) in [
        ("/hs/x", REALM, hs256(&claims("ada"))),
        ("/rs/x", "rs", rs256_a(&claims("ada"))),
    ] {
        // The genuine token works; with `sub` changed it must not.
        jose.assert_accepted(path, &genuine, "ada").await;
        let parts: Vec<&str> = genuine.split('.').collect();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(claims("admin").to_string().as_bytes()),
            parts[2]
        );
        jose.assert_refused(path, realm, &tampered, "signature does not verify")
            .await;
    }
}

#[tokio::test]
async fn an_expired_token_is_refused_with_zero_leeway() {
    let jose = Jose::start().await;
    let expired = claims_with("ada", json!({"exp": now() - 10, "iat": now() - 310}));
    jose.assert_both_refuse(&expired, "expired").await;
}

/// Verified tokens are remembered, HS256 as well as RS256; the memory still honours
/// `exp`: the same token, accepted a moment ago, is refused once it expires.
#[tokio::test]
async fn a_remembered_token_is_refused_once_it_expires() {
    let jose = Jose::start().await;
    type Sign = fn(&serde_json::Value) -> String;
    let signers: [(&str, &str, Sign); 2] = [("/hs/x", REALM, hs256), ("/rs/x", "rs", rs256_a)];
    for (path, realm, sign) in signers {
        let token = sign(&claims_with("ada", json!({ "exp": now() + 2 })));
        jose.assert_accepted(path, &token, "ada").await;
        jose.assert_accepted(path, &token, "ada").await;
        let reply = eventually("the token expiring", || async {
            let reply = get_with_token(&jose.gateway, path, &token).await;
            (reply.status != 200).then_some(reply)
        })
        .await;
        assert_invalid_token(&reply, realm, "expired");
        jose.assert_refused(path, realm, &token, "expired").await;
    }
}

#[tokio::test]
async fn a_token_whose_nbf_is_in_the_future_is_refused() {
    let jose = Jose::start().await;
    let early = claims_with("ada", json!({"nbf": now() + 120}));
    jose.assert_refused("/hs/x", REALM, &hs256(&early), "not valid yet")
        .await;
}

#[tokio::test]
async fn a_token_whose_iat_is_in_the_future_is_refused() {
    let jose = Jose::start().await;
    let from_the_future = claims_with("ada", json!({"iat": now() + 120}));
    jose.assert_refused(
        "/hs/x",
        REALM,
        &hs256(&from_the_future),
        "issued in the future",
    )
    .await;
}

#[tokio::test]
async fn a_token_from_another_issuer_is_refused() {
    let jose = Jose::start().await;
    for iss in [
        json!("https://evil.example"),
        json!(format!("{ISSUER}/")),
        json!(""),
    ] {
        let other = claims_with("ada", json!({ "iss": iss }));
        jose.assert_refused("/hs/x", REALM, &hs256(&other), "issuer")
            .await;
    }
    let without = claims_with("ada", json!({"iss": null}));
    jose.assert_refused("/hs/x", REALM, &hs256(&without), "no iss claim")
        .await;
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let jose = Jose::start().await;
    for aud in [json!("another-api"), json!(["another-api", "a-third-api"])] {
        let other = claims_with("ada", json!({ "aud": aud }));
        jose.assert_refused("/hs/x", REALM, &hs256(&other), "audience")
            .await;
    }
    let without = claims_with("ada", json!({"aud": null}));
    jose.assert_refused("/hs/x", REALM, &hs256(&without), "no aud claim")
        .await;
    // One of several audiences is ours: accepted.
    let several = claims_with("ada", json!({"aud": ["another-api", AUDIENCE]}));
    jose.assert_accepted("/hs/x", &hs256(&several), "ada").await;
}

#[tokio::test]
async fn a_token_without_exp_is_refused() {
    let jose = Jose::start().await;
    let forever = claims_with("ada", json!({"exp": null}));
    jose.assert_both_refuse(&forever, "no exp claim").await;
}

#[tokio::test]
async fn a_token_without_sub_is_refused() {
    let jose = Jose::start().await;
    let nobody = claims_with("ada", json!({"sub": null}));
    jose.assert_refused("/hs/x", REALM, &hs256(&nobody), "no sub claim")
        .await;
}

// ---------------------------------------------------------------------------------------
// Keys: kid, embedded keys, key URLs.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_token_naming_an_unknown_kid_is_refused() {
    let jose = Jose::start().await;
    for key in [Key::RsaA, Key::RsaB] {
        let unknown = token(Algorithm::RS256, Some("rsa-z"), key, &claims("m"));
        jose.assert_refused("/rs/x", "rs", &unknown, "kid").await;
    }
}

#[tokio::test]
async fn a_kid_with_path_traversal_is_just_an_unknown_kid() {
    let jose = Jose::start().await;
    for kid in [
        "../../etc/passwd",
        "../../../../dev/null",
        "/dev/null",
        "rsa-a/../rsa-a",
    ] {
        let traversal = token(Algorithm::RS256, Some(kid), Key::RsaB, &claims("m"));
        jose.assert_refused("/rs/x", "rs", &traversal, "kid").await;
        // A kid means nothing to an HMAC provider: its one secret is the key, whatever
        // the kid says (here the token is keyed with the "file contents" of /dev/null).
        let hmac = token(Algorithm::HS256, Some(kid), Key::Hmac(b"\n"), &claims("m"));
        jose.assert_refused("/hs/x", REALM, &hmac, "signature does not verify")
            .await;
    }
}

#[tokio::test]
async fn an_embedded_jwk_header_does_not_make_the_attackers_key_trusted() {
    let jose = Jose::start().await;
    let attacker_jwk: serde_json::Value = serde_json::from_str(RSA_B_JWK).unwrap();
    // The attacker signs with rsa-b and ships its public key in the header, with the kid
    // of the trusted key, with its own kid, and with none.
    for kid in [Some("rsa-a"), Some("rsa-b"), None] {
        let mut header = json!({"alg": "RS256", "typ": "JWT", "jwk": attacker_jwk});
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        let forged = hand_built(&header, &claims("mallory"), Algorithm::RS256, Key::RsaB);
        let reason = if kid == Some("rsa-b") {
            "kid"
        } else {
            "signature does not verify"
        };
        jose.assert_refused("/rs/x", "rs", &forged, reason).await;
    }
}

#[tokio::test]
async fn an_injected_jku_is_never_fetched_and_the_token_is_refused() {
    let jose = Jose::start().await;
    // The attacker's own JWKS server publishes rsa-b (under both kids): a gateway that
    // followed `jku` would find the key there.
    let mut rsa_b_as_a: serde_json::Value = serde_json::from_str(RSA_B_JWK).unwrap();
    rsa_b_as_a["kid"] = json!("rsa-a");
    let attacker = JwksServer::spawn(jwks(&[RSA_B_JWK, &rsa_b_as_a.to_string()])).await;
    for kid in ["rsa-a", "rsa-b"] {
        for field in ["jku", "x5u"] {
            let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid, field: attacker.url()});
            let forged = hand_built(&header, &claims("mallory"), Algorithm::RS256, Key::RsaB);
            let reason = if kid == "rsa-b" {
                "kid"
            } else {
                "signature does not verify"
            };
            jose.assert_refused("/rs/x", "rs", &forged, reason).await;
        }
    }
    assert_eq!(
        attacker.hits(),
        0,
        "the gateway never fetches a URL a token names"
    );
}

#[tokio::test]
async fn an_es256_all_zero_signature_is_refused() {
    let jose = Jose::start().await;
    // CVE-2022-21449 ("psychic signatures"): r = s = 0 verified any message in some
    // ECDSA implementations. Both the raw (64 bytes) and a DER-ish short form.
    let input = signing_input(
        &json!({"alg": "ES256", "typ": "JWT", "kid": "ec-a"}),
        &claims("mallory"),
    );
    for signature in [vec![0u8; 64], vec![0u8; 8], Vec::new()] {
        let forged = format!("{input}.{}", b64(&signature));
        let context = format!("a signature of {} bytes", signature.len());
        jose.assert_invalid("/es/x", &bearer(&forged), &context)
            .await;
    }
    // The well-formed 64-byte zero signature fails verification proper.
    let forged = format!("{input}.{}", b64(&[0u8; 64]));
    jose.assert_refused("/es/x", "es", &forged, "signature does not verify")
        .await;
}

#[tokio::test]
async fn a_token_with_an_unknown_critical_header_is_refused() {
    let jose = Jose::start().await;
    let secret = Key::Hmac(HS_SECRET.as_bytes());
    let headers = [
        json!({"alg": "HS256", "typ": "JWT", "crit": ["exp-policy"], "exp-policy": 1}),
        // Unencoded payloads (RFC 7797) change what the signature covers.
        json!({"alg": "HS256", "typ": "JWT", "crit": ["b64"], "b64": false}),
        json!({"alg": "HS256", "typ": "JWT", "crit": ["b64"], "b64": true}),
        json!({"alg": "HS256", "typ": "JWT", "crit": []}),
    ];
    for header in headers {
        // Correctly signed with the provider's own secret: only `crit` is wrong.
        let token = hand_built(&header, &claims("ada"), Algorithm::HS256, secret);
        jose.assert_invalid("/hs/x", &bearer(&token), &header.to_string())
            .await;
    }
    // The control: the same token without `crit` is accepted.
    let plain = hand_built(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &claims("ada"),
        Algorithm::HS256,
        secret,
    );
    jose.assert_accepted("/hs/x", &plain, "ada").await;
    let crit = hand_built(
        &json!({"alg": "HS256", "crit": ["exp-policy"], "exp-policy": 1}),
        &claims("ada"),
        Algorithm::HS256,
        secret,
    );
    jose.assert_refused("/hs/x", REALM, &crit, "critical").await;
}

// ---------------------------------------------------------------------------------------
// Token shape.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_tokens_are_refused() {
    let jose = Jose::start().await;
    let good = hs256(&claims("ada"));
    let parts: Vec<&str> = good.split('.').collect();
    let malformed = [
        // Not base64url.
        format!("{}!.{}.{}", parts[0], parts[1], parts[2]),
        format!("{}.{}*.{}", parts[0], parts[1], parts[2]),
        format!("{}.{}.{}$$", parts[0], parts[1], parts[2]),
        // Standard base64 with padding is not base64url.
        format!("{}==.{}.{}", parts[0], parts[1], parts[2]),
        // base64 of something that is not JSON.
        format!("{}.{}.{}", b64(b"not json"), parts[1], parts[2]),
        format!("{}.{}.{}", parts[0], b64(b"not json"), parts[2]),
        // Two parts, one part, four parts.
        format!("{}.{}", parts[0], parts[1]),
        parts[0].to_owned(),
        format!("{good}.{}", parts[2]),
        "...".to_owned(),
        "a.b.c".to_owned(),
    ];
    for token in &malformed {
        let challenge = jose.assert_invalid("/hs/x", &bearer(token), token).await;
        assert_eq!(challenge.param("realm"), Some(REALM));
    }
    jose.assert_refused("/hs/x", REALM, &malformed[6], "malformed")
        .await;
    // The genuine token's parts still work together.
    jose.assert_accepted("/hs/x", &good, "ada").await;
}

#[tokio::test]
async fn authorization_headers_that_are_not_one_bearer_token_are_refused() {
    let jose = Jose::start().await;
    let good = hs256(&claims("ada"));
    for value in [
        format!("Basic {good}"),
        format!("Token {good}"),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        good.clone(),
    ] {
        jose.assert_invalid("/hs/x", &value, &format!("{value:?}"))
            .await;
    }
    // Two Authorization headers: which one would the upstream read? Neither is used.
    let authorization = bearer(&good);
    let reply = get_from(
        UNTRUSTED,
        &jose.gateway,
        "/hs/x",
        &[
            ("authorization", authorization.as_str()),
            ("authorization", authorization.as_str()),
        ],
    )
    .await;
    assert_invalid_token(&reply, REALM, "more than one Authorization header");
    // The scheme is case-insensitive (RFC 7235 §2.1).
    let lower = format!("bearer {good}");
    let reply = get_from(
        UNTRUSTED,
        &jose.gateway,
        "/hs/x",
        &[("authorization", &lower)],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(jose.upstream.hits(), 1);
}

#[tokio::test]
async fn a_64_kib_token_is_refused_as_too_large() {
    let jose = Jose::start().await;
    // Correctly signed: only its size is wrong.
    let padding = "p".repeat(64 * 1024);
    let huge = hs256(&claims_with("ada", json!({ "padding": padding })));
    assert!(huge.len() > 64 * 1024);
    jose.assert_refused("/hs/x", REALM, &huge, "too large")
        .await;
    // Unsigned garbage of the same size is refused the same way, before any decoding.
    jose.assert_refused("/rs/x", "rs", &"A".repeat(64 * 1024), "too large")
        .await;
}

#[tokio::test]
async fn a_token_in_the_query_string_is_not_accepted() {
    let jose = Jose::start().await;
    let good = hs256(&claims("ada"));
    for path in [
        format!("/hs/x?access_token={good}"),
        format!("/hs/x?token={good}"),
    ] {
        let reply = get_from(UNTRUSTED, &jose.gateway, &path, &[]).await;
        // No credentials (RFC 6750 §3.1): a bare challenge, no error code.
        assert_missing_token(&reply, REALM);
    }
    // Nor in a cookie of that name.
    let cookie = format!("access_token={good}");
    let reply = get_from(UNTRUSTED, &jose.gateway, "/hs/x", &[("cookie", &cookie)]).await;
    assert_missing_token(&reply, REALM);
    assert_eq!(jose.upstream.hits(), 0);
}

// ---------------------------------------------------------------------------------------
// required_scopes.
// ---------------------------------------------------------------------------------------

/// `/read` needs scope `read`, `/both` needs `read` and `write`; `/any` has no scopes;
/// all with provider `main` (HS256) to a counting upstream.
async fn scoped_gateway() -> (TestGateway, CountingUpstream) {
    let upstream = CountingUpstream::spawn().await;
    let mut config = ConfigText::new().upstream("app", upstream.addr);
    for (name, scopes) in [
        ("read", "[\"read\"]"),
        ("both", "[\"read\", \"write\"]"),
        ("any", "[]"),
    ] {
        config = config
            .guarded_route(name, &format!("/{name}"), "app", "main")
            .with(&format!("required_scopes = {scopes}"));
    }
    let config = config.hs256_provider("main");
    let gateway = start_with_files(&config, &SECRET_FILE).await;
    (gateway, upstream)
}

#[tokio::test]
async fn a_token_without_a_required_scope_gets_403_insufficient_scope() {
    let (gateway, upstream) = scoped_gateway().await;
    let cases = [
        ("/read/x", json!({}), "read"),
        ("/read/x", json!({"scope": "write"}), "read"),
        ("/read/x", json!({"scope": "readonly reader"}), "read"),
        ("/read/x", json!({"scp": ["write", "admin"]}), "read"),
        ("/read/x", json!({"scope": ""}), "read"),
        ("/both/x", json!({"scope": "read"}), "write"),
        ("/both/x", json!({"scp": ["write"]}), "read"),
    ];
    for (path, scope_claims, missing) in cases {
        let token = hs256(&claims_with("ada", scope_claims.clone()));
        let reply = get_with_token(&gateway, path, &token).await;
        assert_eq!(reply.status, 403, "{path} {scope_claims}: {}", reply.text());
        let challenge = challenge_of(&reply.headers);
        let expected = [
            ("realm", "main"),
            ("error", "insufficient_scope"),
            ("scope", missing),
        ];
        assert_eq!(
            challenge,
            Challenge::bearer(&expected),
            "{path} {scope_claims}"
        );
    }
    assert_eq!(upstream.hits(), 0, "a 403 never reaches the upstream");
}

#[tokio::test]
async fn a_scope_string_or_an_scp_list_holding_the_required_scopes_passes() {
    let (gateway, upstream) = scoped_gateway().await;
    let cases = [
        ("/read/x", json!({"scope": "read write"}), "read write"),
        ("/read/x", json!({"scope": "read"}), "read"),
        ("/read/x", json!({"scp": ["read"]}), "read"),
        ("/read/x", json!({"scp": "write read"}), "write read"),
        (
            "/both/x",
            json!({"scope": "write admin read"}),
            "write admin read",
        ),
        ("/both/x", json!({"scp": ["read", "write"]}), "read write"),
    ];
    for (index, (path, scope_claims, forwarded)) in cases.into_iter().enumerate() {
        let token = hs256(&claims_with("ada", scope_claims.clone()));
        let reply = get_with_token(&gateway, path, &token).await;
        assert_eq!(reply.status, 200, "{path} {scope_claims}: {}", reply.text());
        assert_eq!(reply.upstream_header("x-fluxlit-scope"), [forwarded]);
        assert_eq!(upstream.hits(), index + 1);
    }
    // A route without required scopes takes a token without any.
    let reply = get_with_token(&gateway, "/any/x", &hs256(&claims("ada"))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.upstream_header("x-fluxlit-scope"),
        Vec::<String>::new()
    );
}

// ---------------------------------------------------------------------------------------
// allow.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_bearer_route_with_allow_admits_listed_users_and_gives_others_a_plain_403() {
    let upstream = CountingUpstream::spawn().await;
    let config = ConfigText::new()
        .admin()
        .upstream("app", upstream.addr)
        .guarded_route("api", "/api", "app", "main")
        .with("allow = { email_domains = [\"example.com\"], groups = [\"ops\"] }")
        .hs256_provider("main")
        .with("groups_claim = \"cognito:groups\"");
    let gateway = start_with_files(&config, &SECRET_FILE).await;
    let admitted = [
        json!({"email": "ada@Example.COM"}),
        json!({"email": "ada@example.com", "email_verified": true}),
        json!({"cognito:groups": ["staff", "ops"]}),
        json!({"cognito:groups": "ops"}),
    ];
    for changes in &admitted {
        let token = hs256(&claims_with("ada", changes.clone()));
        let reply = get_with_token(&gateway, "/api/x", &token).await;
        assert_eq!(reply.status, 200, "{changes}: {}", reply.text());
    }
    let refused = [
        json!({}),
        json!({"email": "ada@example.org"}),
        json!({"email": "ada@eu.example.com"}),
        json!({"email": "ada@evilexample.com"}),
        json!({"email": "ada@example.com", "email_verified": false}),
        json!({"groups": ["ops"]}),
        json!({"cognito:groups": ["Ops", "ops-admins"]}),
    ];
    for changes in &refused {
        let token = hs256(&claims_with("ada", changes.clone()));
        // A browser too gets the plain 403: a bearer token has no session to log out of.
        let authorization = bearer(&token);
        let headers = [
            ("authorization", authorization.as_str()),
            ("accept", "text/html"),
        ];
        let reply = get_from(UNTRUSTED, &gateway, "/api/x", &headers).await;
        reply.assert_says(403, "is logged in, but not allowed on this route");
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; charset=utf-8"),
            "{changes}"
        );
        assert_eq!(reply.header("www-authenticate"), None, "{changes}");
    }
    assert_eq!(
        upstream.hits(),
        admitted.len(),
        "a refused user never gets through"
    );
    let admin = gateway.admin();
    let metrics = within("scrape", send(admin, get(admin, "/metrics", &[])))
        .await
        .text();
    let expected = format!(
        "fluxlit_auth_failures_total{{provider=\"main\",reason=\"not_allowed\"}} {}",
        refused.len()
    );
    assert!(metrics.contains(&expected), "{expected} in {metrics}");
}

// ---------------------------------------------------------------------------------------
// Identity headers to the upstream.
// ---------------------------------------------------------------------------------------

/// `/api` with provider `main` (claim `email` → `x-fluxlit-email`, `tenant` →
/// `x-fluxlit-tenant`) and `/` without auth, both to one counting upstream;
/// 127.0.0.1 is a trusted proxy.
async fn identity_gateway() -> (TestGateway, CountingUpstream) {
    let upstream = CountingUpstream::spawn().await;
    let config = api_behind_main(upstream.addr, "ui")
        .with("claim_headers = { email = \"x-fluxlit-email\", tenant = \"X-Fluxlit-Tenant\" }")
        .trust_loopback();
    let gateway = start_with_files(&config, &SECRET_FILE).await;
    (gateway, upstream)
}

/// What a client forges: the gateway's identity headers and the claim headers.
const SPOOFED: [(&str, &str); 4] = [
    ("x-fluxlit-sub", "root"),
    ("x-fluxlit-scope", "admin"),
    ("x-fluxlit-email", "root@evil.example"),
    ("x-fluxlit-tenant", "every-tenant"),
];

#[tokio::test]
async fn the_upstream_gets_the_verified_sub_scope_and_claim_headers() {
    let (gateway, _) = identity_gateway().await;
    let token = hs256(&claims_with(
        "ada",
        json!({"scope": "read write", "email": "ada@example.com", "tenant": 42}),
    ));
    let reply = get_with_token(&gateway, "/api/me", &token).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.upstream_header("x-fluxlit-sub"), ["ada"]);
    assert_eq!(reply.upstream_header("x-fluxlit-scope"), ["read write"]);
    assert_eq!(
        reply.upstream_header("x-fluxlit-email"),
        ["ada@example.com"]
    );
    assert_eq!(reply.upstream_header("x-fluxlit-tenant"), ["42"]);
    // The upstream may verify the token itself: it is forwarded unchanged.
    assert_eq!(reply.upstream_header("authorization"), [bearer(&token)]);
}

#[tokio::test]
async fn spoofed_identity_headers_are_replaced_on_an_auth_route_from_any_peer() {
    let (gateway, _) = identity_gateway().await;
    let full = hs256(&claims_with(
        "ada",
        json!({"scope": "read", "email": "ada@example.com", "tenant": "t1"}),
    ));
    // A token with neither scope nor the claims: the client's copies must not fill in.
    let bare = hs256(&claims("bob"));
    for peer in [UNTRUSTED, TRUSTED] {
        let authorization = bearer(&full);
        let mut headers = SPOOFED.to_vec();
        headers.push(("authorization", &authorization));
        let reply = get_from(peer, &gateway, "/api/me", &headers).await;
        assert_eq!(reply.status, 200, "{peer}: {}", reply.text());
        assert_eq!(reply.upstream_header("x-fluxlit-sub"), ["ada"], "{peer}");
        assert_eq!(reply.upstream_header("x-fluxlit-scope"), ["read"], "{peer}");
        assert_eq!(
            reply.upstream_header("x-fluxlit-email"),
            ["ada@example.com"],
            "{peer}"
        );
        assert_eq!(reply.upstream_header("x-fluxlit-tenant"), ["t1"], "{peer}");

        let authorization = bearer(&bare);
        let mut headers = SPOOFED.to_vec();
        headers.push(("authorization", &authorization));
        let reply = get_from(peer, &gateway, "/api/me", &headers).await;
        assert_eq!(reply.status, 200, "{peer}: {}", reply.text());
        assert_eq!(reply.upstream_header("x-fluxlit-sub"), ["bob"], "{peer}");
        for (name, _) in &SPOOFED[1..] {
            assert_eq!(
                reply.upstream_header(name),
                Vec::<String>::new(),
                "{name} from {peer} when the token has no such claim"
            );
        }
    }
}

#[tokio::test]
async fn a_claim_carrying_a_line_break_is_refused_never_split_into_headers() {
    let (gateway, upstream) = identity_gateway().await;
    for changes in [
        json!({"sub": "ada\r\nx-fluxlit-scope: admin"}),
        json!({"email": "ada@example.com\r\nx-fluxlit-sub: root"}),
        json!({"tenant": "t1\u{0}"}),
    ] {
        let token = hs256(&claims_with("ada", changes.clone()));
        let reply = get_with_token(&gateway, "/api/me", &token).await;
        assert_invalid_token(&reply, "main", "cannot be sent as a header");
    }
    assert_eq!(upstream.hits(), 0);

    // Scopes are split on any whitespace, line breaks included, and joined with spaces:
    // one header value, whatever the token says.
    let token = hs256(&claims_with(
        "ada",
        json!({"scope": "read\r\nx-injected: 1"}),
    ));
    let reply = get_with_token(&gateway, "/api/me", &token).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.upstream_header("x-fluxlit-scope"),
        ["read x-injected: 1"]
    );
    assert_eq!(reply.upstream_header("x-injected"), Vec::<String>::new());
}

#[tokio::test]
async fn spoofed_identity_headers_are_stripped_on_a_route_without_auth_from_any_peer() {
    let (gateway, upstream) = identity_gateway().await;
    for peer in [UNTRUSTED, TRUSTED] {
        // Header names in any case, and repeated.
        let mut headers = SPOOFED.to_vec();
        headers.extend([
            ("X-Fluxlit-Sub", "root2"),
            ("X-FLUXLIT-EMAIL", "again@evil.example"),
        ]);
        let reply = get_from(peer, &gateway, "/dashboard", &headers).await;
        assert_eq!(reply.status, 200, "{peer}: {}", reply.text());
        for (name, _) in SPOOFED {
            assert_eq!(
                reply.upstream_header(name),
                Vec::<String>::new(),
                "{name} from {peer} on a route without auth"
            );
        }
    }
    assert_eq!(upstream.hits(), 2);
}

// ---------------------------------------------------------------------------------------
// Forward auth (kind = "trusted_proxy_user").
// ---------------------------------------------------------------------------------------

/// `/app` behind provider `sso` (forward auth), `/` without auth; 127.0.0.1 trusted.
async fn forward_auth_gateway() -> (TestGateway, CountingUpstream) {
    let upstream = CountingUpstream::spawn().await;
    let config = ConfigText::new()
        .trust_loopback()
        .upstream("app", upstream.addr)
        .guarded_route("app", "/app", "app", "sso")
        .route("public", "/", "app")
        .provider("sso", "trusted_proxy_user", "");
    let gateway = TestGateway::start(&config).await;
    (gateway, upstream)
}

#[tokio::test]
async fn a_remote_user_from_an_untrusted_peer_gets_401_and_is_never_forwarded() {
    let (gateway, upstream) = forward_auth_gateway().await;
    let reply = get_from(
        UNTRUSTED,
        &gateway,
        "/app/x",
        &[("x-remote-user", "alice"), ("x-fluxlit-sub", "alice")],
    )
    .await;
    reply.assert_says(401, "authenticated by the proxy");
    assert_eq!(upstream.hits(), 0);

    // On a route without auth the header is stripped, not believed.
    let reply = get_from(UNTRUSTED, &gateway, "/other", &[("x-remote-user", "alice")]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.upstream_header("x-remote-user"), Vec::<String>::new());
    assert_eq!(reply.upstream_header("x-fluxlit-sub"), Vec::<String>::new());
}

#[tokio::test]
async fn a_remote_user_from_the_trusted_proxy_reaches_the_upstream_as_x_fluxlit_sub() {
    let (gateway, upstream) = forward_auth_gateway().await;
    let reply = get_from(
        TRUSTED,
        &gateway,
        "/app/x",
        &[("x-remote-user", "alice"), ("x-fluxlit-sub", "root")],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.upstream_header("x-fluxlit-sub"), ["alice"]);
    // The user travels as the gateway's own header, never as the proxy's.
    assert_eq!(reply.upstream_header("x-remote-user"), Vec::<String>::new());
    assert_eq!(upstream.hits(), 1);
}

/// Forward auth believes its `trusted_peers` only. Another proxy in `trust.proxies` (a
/// load balancer, or a stock nginx passing its clients' `X-Remote-User` on) is believed
/// for forwarding, and its user gets 401.
#[tokio::test]
async fn a_remote_user_from_a_proxy_outside_trusted_peers_gets_401() {
    let upstream = CountingUpstream::spawn().await;
    let config = ConfigText::new()
        .table(
            "[trust]",
            &format!("proxies = [\"{TRUSTED}/32\", \"{OTHER_PROXY}/32\"]"),
        )
        .upstream("app", upstream.addr)
        .guarded_route("app", "/app", "app", "sso")
        .provider(
            "sso",
            "trusted_proxy_user",
            &format!("trusted_peers = [\"{TRUSTED}\"]"),
        );
    let gateway = TestGateway::start(&config).await;
    let sent = [
        ("x-remote-user", "admin"),
        ("x-forwarded-for", "203.0.113.7"),
    ];

    let reply = get_from(OTHER_PROXY, &gateway, "/app/x", &sent).await;
    reply.assert_says(401, "authenticated by the proxy");
    assert_eq!(upstream.hits(), 0);

    let reply = get_from(TRUSTED, &gateway, "/app/x", &sent).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.upstream_header("x-fluxlit-sub"), ["admin"]);
    assert_eq!(reply.upstream_header("x-remote-user"), Vec::<String>::new());
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn a_trusted_peer_without_a_remote_user_gets_401() {
    let (gateway, upstream) = forward_auth_gateway().await;
    for headers in [
        &[][..],
        &[("x-remote-user", "")][..],
        &[("x-remote-user", "   ")][..],
        &[("x-fluxlit-sub", "alice")][..],
    ] {
        let reply = get_from(TRUSTED, &gateway, "/app/x", headers).await;
        assert_eq!(reply.status, 401, "{headers:?}: {}", reply.text());
    }
    assert_eq!(upstream.hits(), 0);
}
