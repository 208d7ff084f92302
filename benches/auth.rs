//! Token verification as the request path does it, with keys decoded once at compile:
//! HS256 with a shared secret, RS256 and ES256 with keys from a JWKS (a file here, so no
//! network is involved). Each token is benched at first sight (every check made) and
//! remembered (seen before, not expired, keys unchanged); the identity assertion is
//! benched signed afresh (EdDSA, ES256) and reused. `cargo bench --bench auth`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark stops on a failed setup"
)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use fluxlit::auth::jwks::{JwksCache, JwksSettings, JwksSource};
use fluxlit::auth::jwt::{JwtVerifier, now_secs};
use fluxlit::config::model::AuthProvider;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::json;

const SECRET: &[u8] = b"a-benchmark-secret-of-32-bytes!!";

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jose")
        .join(name)
}

fn provider(algorithms: &str) -> AuthProvider {
    toml::from_str(&format!(
        "kind = \"jwt\"\nissuer = \"https://issuer.test\"\naudience = \"api\"\nalgorithms = {algorithms}\n"
    ))
    .expect("provider")
}

fn claims() -> serde_json::Value {
    let now = now_secs();
    json!({"iss": "https://issuer.test", "aud": "api", "sub": "ada", "iat": now, "exp": now + 3600, "scope": "read write"})
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims(), key).expect("sign")
}

fn jwks_cache(keys: &[&str]) -> Arc<JwksCache> {
    let dir = std::env::temp_dir().join(format!("fluxlit-bench-jwks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("jwks.json");
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|name| {
            serde_json::from_str(&std::fs::read_to_string(fixture(name)).expect("jwk"))
                .expect("json")
        })
        .collect();
    std::fs::write(&path, json!({ "keys": keys }).to_string()).expect("write jwks");
    let settings = JwksSettings {
        ttl: std::time::Duration::from_secs(3600),
        refetch_interval: std::time::Duration::from_secs(30),
        max_stale: std::time::Duration::from_secs(3600),
    };
    let keys = fluxlit::auth::jwks::read_file(&path).expect("jwks loads");
    let cache = JwksCache::new("bench", JwksSource::File(path), settings);
    cache.install_file_keys(keys);
    cache
}

fn verification(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");

    let hs = JwtVerifier::new(
        &provider("[\"HS256\"]"),
        Some(DecodingKey::from_secret(SECRET).expect("key")),
        None,
    );
    let hs_token = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(SECRET).expect("key"),
    );
    assert!(runtime.block_on(hs.verify(&hs_token)).is_ok());
    c.bench_function("verify HS256, first sight", |b| {
        b.iter(|| {
            runtime
                .block_on(hs.verify_signature(black_box(&hs_token)))
                .is_ok()
        })
    });
    c.bench_function("verify HS256, remembered", |b| {
        b.iter(|| runtime.block_on(hs.verify(black_box(&hs_token))).is_ok())
    });

    let jwks = jwks_cache(&["rsa-a.jwk.json", "rsa-b.jwk.json", "ec-a.jwk.json"]);
    let keyed = JwtVerifier::new(&provider("[\"RS256\", \"ES256\"]"), None, Some(jwks));
    let rsa =
        EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa-a.pem")).expect("pem")).expect("rsa");
    let rs_token = sign(Algorithm::RS256, Some("rsa-a"), &rsa);
    assert!(runtime.block_on(keyed.verify(&rs_token)).is_ok());
    c.bench_function("verify RS256 (JWKS, 3 keys), first sight", |b| {
        b.iter(|| {
            runtime
                .block_on(keyed.verify_signature(black_box(&rs_token)))
                .is_ok()
        })
    });
    c.bench_function("verify RS256 (JWKS, 3 keys), remembered", |b| {
        b.iter(|| runtime.block_on(keyed.verify(black_box(&rs_token))).is_ok())
    });

    let ec =
        EncodingKey::from_ec_pem(&std::fs::read(fixture("ec-a.p8.pem")).expect("pem")).expect("ec");
    let es_token = sign(Algorithm::ES256, Some("ec-a"), &ec);
    assert!(runtime.block_on(keyed.verify(&es_token)).is_ok());
    c.bench_function("verify ES256 (JWKS, 3 keys), first sight", |b| {
        b.iter(|| {
            runtime
                .block_on(keyed.verify_signature(black_box(&es_token)))
                .is_ok()
        })
    });
    c.bench_function("verify ES256 (JWKS, 3 keys), remembered", |b| {
        b.iter(|| runtime.block_on(keyed.verify(black_box(&es_token))).is_ok())
    });

    let refused = format!("{}x", &hs_token[..hs_token.len() - 1]);
    c.bench_function("refuse HS256 with a bad signature", |b| {
        b.iter(|| runtime.block_on(hs.verify(black_box(&refused))).is_err())
    });
}

/// The identity assertion an upstream gets: signed afresh, and reused for the same
/// statement (what a repeated token costs).
fn assertion(c: &mut Criterion) {
    use fluxlit::auth::identity::{Asserted, IdentitySigner, SigningKey};
    let asserted = Asserted {
        sub: "ada".to_owned(),
        scope: Some("read write".to_owned()),
        claims: vec![("email".to_owned(), json!("ada@example.org"))],
        expires: None,
    };
    let signer = |key: SigningKey| {
        IdentitySigner::new(
            http::HeaderName::from_static("x-fluxlit-identity"),
            "https://gw.example".to_owned(),
            std::time::Duration::from_secs(60),
            Arc::new(key),
            &[],
        )
    };
    let eddsa = signer(SigningKey::generate().unwrap());
    let pem = std::fs::read(fixture("ec-a.p8.pem")).unwrap();
    let es256 = signer(SigningKey::from_pem(&pem).unwrap());
    let now = std::time::SystemTime::now();
    c.bench_function("identity assertion EdDSA, signed", |b| {
        b.iter(|| black_box(eddsa.sign(&asserted, "api", "request-id", now)))
    });
    c.bench_function("identity assertion ES256, signed", |b| {
        b.iter(|| black_box(es256.sign(&asserted, "api", "request-id", now)))
    });
    c.bench_function("identity assertion, reused", |b| {
        b.iter(|| black_box(eddsa.assertion(&asserted, "api", "request-id", now)))
    });
}

criterion_group!(benches, verification, assertion);
criterion_main!(benches);
