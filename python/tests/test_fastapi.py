"""GatewayIdentity against the real gateway: assertions it signs are accepted, nothing
else is."""

# No `from __future__ import annotations`: FastAPI reads the local dependencies at runtime.

import asyncio
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import jwt
import pytest
from conftest import Gateway, Uvicorn, es256_pem, wait_until
from fastapi import Depends, FastAPI, Request

from fluxlit_gateway.client import current_request_id
from fluxlit_gateway.fastapi import GatewayIdentity, require_scopes
from fluxlit_gateway.identity import Identity, IdentityError, IdentityVerifier, JwksCache
from fluxlit_gateway.testing import AssertionSigner


def make_app(identity: GatewayIdentity) -> FastAPI:
    app = FastAPI()
    writer = require_scopes("write", identity=identity)

    @app.get("/api/whoami")
    async def whoami(user: Annotated[Identity, Depends(identity)]) -> dict[str, Any]:
        return {
            "sub": user.sub,
            "scopes": sorted(user.scopes),
            "email": user.get("email"),
            "request_id": user.request_id,
            "current_request_id": current_request_id.get(),
        }

    @app.post("/api/items")
    def create(user: Annotated[Identity, Depends(writer)]) -> dict[str, str]:
        return {"created_by": user.sub}

    @app.get("/api/raw")
    def raw(request: Request) -> dict[str, str | None]:
        # The assertion as received, unchecked: for the tests that verify it themselves.
        return {"assertion": request.headers.get("x-fluxlit-identity")}

    return app


def gateway_config(api_port: int) -> str:
    return f"""
[identity]
signing_key = {{ file = "identity.pem" }}

[upstreams.api]
url = "http://127.0.0.1:{api_port}"

# The same app under another upstream name: what it gets is meant for "other".
[upstreams.other]
url = "http://127.0.0.1:{api_port}"

[auth.providers.main]
kind = "jwt"
issuer = "https://login.test"
audience = "fluxlit-tests"
algorithms = ["HS256"]
hs256_secret = {{ file = "hs256" }}
claim_headers = {{ email = "x-fluxlit-email" }}

[[routes]]
name = "api"
path_prefix = "/api"
upstream = "api"
auth = "main"

[[routes]]
name = "other"
path_prefix = "/other"
strip_prefix = true
upstream = "other"
auth = "main"
"""


@dataclass
class Setup:
    gateway: Gateway
    app: Uvicorn
    identity: GatewayIdentity
    jwks: JwksCache

    def bearer(self, sub: str = "ada", *claims: str) -> dict[str, str]:
        token = self.gateway.token("main", sub, *claims)
        return {"authorization": f"Bearer {token}"}


@pytest.fixture
def setup(fluxlit_bin: Path, tmp_path: Path) -> Iterator[Setup]:
    (tmp_path / "hs256").write_text(secrets.token_urlsafe(32))
    (tmp_path / "identity.pem").write_text(es256_pem())
    gateway = Gateway(fluxlit_bin, tmp_path, gateway_config(0))
    jwks = JwksCache(gateway.url + "/.well-known/fluxlit/jwks.json", refetch_cooldown=0.2)
    identity = GatewayIdentity(
        verifier=IdentityVerifier(issuer=gateway.url, audience="api", jwks=jwks)
    )
    with Uvicorn(make_app(identity)) as app:
        gateway.write_config(gateway_config(app.port))
        with gateway:
            yield Setup(gateway, app, identity, jwks)


def test_an_assertion_signed_by_the_gateway_is_accepted(setup: Setup) -> None:
    response = httpx.get(
        setup.gateway.url + "/api/whoami",
        headers=setup.bearer("ada", "scope=read", "email=ada@example.com"),
    )
    assert response.status_code == 200, response.text
    seen = response.json()
    assert seen["sub"] == "ada"
    assert seen["scopes"] == ["read"]
    assert seen["email"] == "ada@example.com"
    # The assertion names the request it was signed for, the one the client sees, and
    # the dependency made that id the current one for ApiClient.
    assert seen["request_id"] == response.headers["x-request-id"]
    assert seen["current_request_id"] == response.headers["x-request-id"]


def test_a_forged_identity_sent_straight_to_the_app_is_refused(setup: Setup) -> None:
    # Plain headers, as the gateway's convenience headers look: anyone can send them.
    plain = httpx.get(
        setup.app.url + "/api/whoami",
        headers={"x-fluxlit-sub": "admin", "x-fluxlit-scope": "write"},
    )
    assert plain.status_code == 401
    # An assertion with the right issuer and audience, signed with another key.
    forger = AssertionSigner(issuer=setup.gateway.url, audience="api")
    forged = httpx.get(setup.app.url + "/api/whoami", headers=forger.headers("admin"))
    assert forged.status_code == 401
    # The gateway's own assertion with a changed payload.
    genuine = httpx.get(setup.gateway.url + "/api/raw", headers=setup.bearer("ada"))
    assertion = genuine.json()["assertion"]
    head, _, signature = assertion.split(".")
    payload = jwt.utils.base64url_encode(
        b'{"iss":"%s","aud":"api","sub":"admin","iat":%d,"exp":%d}'
        % (setup.gateway.url.encode(), int(time.time()), int(time.time()) + 60)
    ).decode()
    tampered = httpx.get(
        setup.app.url + "/api/whoami",
        headers={"x-fluxlit-identity": f"{head}.{payload}.{signature}"},
    )
    assert tampered.status_code == 401


def test_an_assertion_for_another_upstream_is_refused(setup: Setup) -> None:
    # Through the route of upstream "other": the gateway signs for aud "other".
    response = httpx.get(setup.gateway.url + "/other/api/whoami", headers=setup.bearer("ada"))
    assert response.status_code == 401, response.text
    raw = httpx.get(setup.gateway.url + "/other/api/raw", headers=setup.bearer("ada"))
    claims = jwt.decode(raw.json()["assertion"], options={"verify_signature": False})
    assert claims["aud"] == "other"


def test_an_expired_assertion_is_refused() -> None:
    signer = AssertionSigner(audience="api")
    verifier = signer.verifier()
    verifier.leeway = 0
    with pytest.raises(IdentityError, match="expired"):
        verifier.verify(signer.assertion("ada", ttl=-1))


def test_require_scopes_answers_403_without_the_scope(setup: Setup) -> None:
    url = setup.gateway.url + "/api/items"
    reader = httpx.post(url, headers=setup.bearer("ada", "scope=read"))
    assert reader.status_code == 403
    assert reader.json() == {"detail": "missing scope: write"}
    writer = httpx.post(url, headers=setup.bearer("ada", "scope=read write"))
    assert writer.status_code == 200, writer.text
    assert writer.json() == {"created_by": "ada"}
    anonymous = httpx.post(setup.app.url + "/api/items")
    assert anonymous.status_code == 401


def test_a_rotated_gateway_key_is_followed(setup: Setup, tmp_path: Path) -> None:
    first = httpx.get(setup.gateway.url + "/api/whoami", headers=setup.bearer("ada"))
    assert first.status_code == 200, first.text
    assert setup.jwks.fetches == 1
    old_kid = jwt.get_unverified_header(
        httpx.get(setup.gateway.url + "/api/raw", headers=setup.bearer()).json()["assertion"]
    )["kid"]

    # A new key; the old one stays published as a previous key.
    (tmp_path / "previous.pem").write_text((tmp_path / "identity.pem").read_text())
    (tmp_path / "identity.pem").write_text(es256_pem())
    config = gateway_config(setup.app.port).replace(
        "[identity]\n", '[identity]\nprevious_keys = [{ file = "previous.pem" }]\n'
    )
    setup.gateway.write_config(config)
    setup.gateway.reload()
    jwks_url = setup.gateway.url + "/.well-known/fluxlit/jwks.json"
    wait_until("the new key is published", lambda: len(httpx.get(jwks_url).json()["keys"]) == 2)

    time.sleep(0.3)  # past the test cache's refetch cooldown
    after = httpx.get(setup.gateway.url + "/api/whoami", headers=setup.bearer("ada"))
    assert after.status_code == 200, after.text
    assert setup.jwks.fetches == 2, "the unknown kid fetched the keys again"
    new_kid = jwt.get_unverified_header(
        httpx.get(setup.gateway.url + "/api/raw", headers=setup.bearer()).json()["assertion"]
    )["kid"]
    assert new_kid != old_kid


def test_keys_are_fetched_once_for_many_concurrent_requests(setup: Setup) -> None:
    assertion = httpx.get(setup.gateway.url + "/api/raw", headers=setup.bearer("ada")).json()[
        "assertion"
    ]
    verifier = IdentityVerifier(
        issuer=setup.gateway.url,
        audience="api",
        jwks=JwksCache(setup.gateway.url + "/.well-known/fluxlit/jwks.json"),
    )

    async def many() -> list[Identity]:
        return await asyncio.gather(*(verifier.verify_async(assertion) for _ in range(50)))

    found = asyncio.run(many())
    assert {identity.sub for identity in found} == {"ada"}
    assert isinstance(verifier.jwks, JwksCache)
    assert verifier.jwks.fetches == 1
    # Made-up key ids do not turn into a fetch each: one per cooldown (10 s by default).
    forger = AssertionSigner(issuer=setup.gateway.url, audience="api")
    for _ in range(20):
        forger.kid = secrets.token_hex(8)
        with pytest.raises(IdentityError, match="no key"):
            verifier.verify(forger.assertion("admin"))
    assert verifier.jwks.fetches == 1


def test_openapi_shows_the_identity_as_a_security_scheme(setup: Setup) -> None:
    document = httpx.get(setup.app.url + "/openapi.json").json()
    assert document["components"]["securitySchemes"]["FluxlitIdentity"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-fluxlit-identity",
        "description": setup.identity.model.description,
    }
    assert document["paths"]["/api/whoami"]["get"]["security"] == [{"FluxlitIdentity": []}]
    # Behind require_scopes too.
    assert document["paths"]["/api/items"]["post"]["security"] == [{"FluxlitIdentity": []}]
    # Not as a parameter the caller fills in.
    assert "parameters" not in document["paths"]["/api/whoami"]["get"]


def test_the_environment_supplies_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLUXLIT_GATEWAY_URL", raising=False)
    monkeypatch.delenv("FLUXLIT_UPSTREAM_NAME", raising=False)
    with pytest.raises(ValueError, match="FLUXLIT_GATEWAY_URL"):
        GatewayIdentity()
    monkeypatch.setenv("FLUXLIT_GATEWAY_URL", "http://127.0.0.1:8080/")
    with pytest.raises(ValueError, match="FLUXLIT_UPSTREAM_NAME"):
        GatewayIdentity()
    monkeypatch.setenv("FLUXLIT_UPSTREAM_NAME", "api")
    verifier = GatewayIdentity().verifier
    assert (verifier.issuer, verifier.audience) == ("http://127.0.0.1:8080", "api")
    assert isinstance(verifier.jwks, JwksCache)
    assert verifier.jwks.url == "http://127.0.0.1:8080/.well-known/fluxlit/jwks.json"
