//! Bearer tokens through the JWT verifier, with an HS256 key and with a JWKS loaded from
//! the test fixtures: any string is refused or accepted without a panic, and a token
//! signed with the shared secret never verifies against the public keys (no key
//! confusion) nor with an algorithm other than the one it was signed with.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fluxlit::auth::Check;
use fluxlit::auth::jwt::JwtVerifier;
use fluxlit::build::compile_and_build;
use fluxlit::compile::CompileContext;
use fluxlit::config::{self, ConfigSource, SourceHash};
use fluxlit::snapshot::Snapshot;
use fluxlit_fuzz::{AnyVariable, SECRET};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"
[upstreams.app]
builtin = "echo"

[[routes]]
name = "hs"
path_prefix = "/hs"
upstream = "app"
auth = "hs"

[[routes]]
name = "keys"
path_prefix = "/keys"
upstream = "app"
auth = "keys"

[auth.providers.hs]
kind = "jwt"
issuer = "https://issuer.fuzz"
audience = "fuzz"
algorithms = ["HS256"]
hs256_secret = { env = "FUZZ_SECRET" }

[auth.providers.keys]
kind = "jwt"
issuer = "https://issuer.fuzz"
audience = "fuzz"
algorithms = ["RS256", "PS256", "ES256", "EdDSA"]
jwks_file = "jwks.json"
jwks_refetch_interval = "1h"
"#;

const JWKS: [&str; 3] = [
    include_str!("../../tests/fixtures/jose/rsa-a.jwk.json"),
    include_str!("../../tests/fixtures/jose/rsa-b.jwk.json"),
    include_str!("../../tests/fixtures/jose/ec-a.jwk.json"),
];

struct Fixture {
    runtime: tokio::runtime::Runtime,
    snapshot: Snapshot,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("fluxlit-fuzz-jwt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let jwks = format!("{{\"keys\": [{}]}}", JWKS.join(","));
        std::fs::write(dir.join("jwks.json"), jwks).expect("write jwks");
        let path: PathBuf = dir.join("fluxlit.toml");
        let source = ConfigSource {
            path: path.clone(),
            text: CONFIG.to_owned(),
            hash: SourceHash::of(CONFIG.as_bytes()),
        };
        let checked = config::check(source).unwrap_or_else(|e| panic!("{:?}", e.render()));
        let ctx = CompileContext::for_config(&path, Arc::new(AnyVariable));
        let snapshot = compile_and_build(checked, None, 1, &ctx).expect("the fixture config compiles");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        Fixture { runtime, snapshot }
    })
}

fn verifier<'a>(fixture: &'a Fixture, name: &str) -> &'a JwtVerifier {
    match &fixture.snapshot.providers[name].check {
        Check::Jwt(verifier) => verifier,
        other => panic!("{name} is not a jwt provider: {other:?}"),
    }
}

#[derive(Debug, Arbitrary)]
enum Input {
    /// Any string as the token.
    Raw(String),
    /// A token signed with the HS256 secret over any header and payload bytes.
    Signed { header: Vec<u8>, payload: Vec<u8> },
    /// A well-formed HS256 token with chosen claim values.
    Claims {
        alg: u8,
        kid: Option<String>,
        exp: Claim,
        iat: Option<Claim>,
        nbf: Option<Claim>,
        aud: Claim,
    },
}

#[derive(Debug, Arbitrary)]
enum Claim {
    Int(i64),
    Float(f64),
    Text(String),
    Null,
    Array(Vec<String>),
}

impl Claim {
    fn json(&self) -> serde_json::Value {
        match self {
            Claim::Int(n) => (*n).into(),
            Claim::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
            }
            Claim::Text(s) => s.clone().into(),
            Claim::Null => serde_json::Value::Null,
            Claim::Array(items) => items.clone().into(),
        }
    }
}

const ALGS: [&str; 8] = [
    "HS256", "HS384", "none", "RS256", "ES256", "EdDSA", "hs256", "",
];

fn sign(header: &[u8], payload: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("an HMAC key");
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).expect("hmac signs");
    format!("{message}.{signature}")
}

fuzz_target!(|input: Input| {
    let fixture = fixture();
    let hs = verifier(fixture, "hs");
    let keys = verifier(fixture, "keys");
    let (token, signed_alg) = match &input {
        Input::Raw(token) => (token.clone(), None),
        Input::Signed { header, payload } => {
            let alg = serde_json::from_slice::<serde_json::Value>(header)
                .ok()
                .and_then(|h| h.get("alg").and_then(|a| a.as_str()).map(str::to_owned));
            (sign(header, payload), Some(alg))
        }
        Input::Claims {
            alg,
            kid,
            exp,
            iat,
            nbf,
            aud,
        } => {
            let alg = ALGS[usize::from(*alg) % ALGS.len()];
            let mut header = serde_json::json!({ "alg": alg, "typ": "JWT" });
            if let Some(kid) = kid {
                header["kid"] = kid.clone().into();
            }
            let mut claims = serde_json::json!({
                "iss": "https://issuer.fuzz",
                "sub": "fuzz",
                "aud": aud.json(),
                "exp": exp.json(),
            });
            if let Some(iat) = iat {
                claims["iat"] = iat.json();
            }
            if let Some(nbf) = nbf {
                claims["nbf"] = nbf.json();
            }
            let header = serde_json::to_vec(&header).expect("json");
            let claims = serde_json::to_vec(&claims).expect("json");
            (sign(&header, &claims), Some(Some(alg.to_owned())))
        }
    };
    let (from_hs, from_keys) = fixture
        .runtime
        .block_on(async { (hs.verify(&token).await, keys.verify(&token).await) });
    if let Some(alg) = signed_alg {
        assert!(
            from_keys.is_err(),
            "an HMAC-signed token verified against the JWKS"
        );
        if from_hs.is_ok() {
            assert_eq!(alg.as_deref(), Some("HS256"), "verified under another alg");
        }
    }
});
