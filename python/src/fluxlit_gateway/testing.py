"""Test an app's endpoints without a gateway: assertions signed with a test key.

```python
from fastapi.testclient import TestClient
from fluxlit_gateway.fastapi import GatewayIdentity
from fluxlit_gateway.testing import AssertionSigner

signer = AssertionSigner(audience="api")
identity = GatewayIdentity(verifier=signer.verifier())   # instead of the app's
client = TestClient(app)
client.get("/api/me", headers=signer.headers("ada", scopes=["read"]))
```

`signer.verifier()` knows the test key directly; `signer.serve_jwks()` serves it over
HTTP on loopback instead, for code that takes a JWKS URL.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fluxlit_gateway.identity import IdentityError, IdentityVerifier

__all__ = ["AssertionSigner", "StaticKeys"]


class StaticKeys:
    """A fixed JWK set, never fetched: the `KeySource` of a test verifier."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        self._keys = {entry["kid"]: jwt.PyJWK(dict(entry)) for entry in jwks["keys"]}

    def key(self, kid: str) -> jwt.PyJWK:
        key = self._keys.get(kid)
        if key is None:
            raise IdentityError(f"no key {kid!r} among the test keys")
        return key

    async def key_async(self, kid: str) -> jwt.PyJWK:
        return self.key(kid)


class AssertionSigner:
    """Signs identity assertions as the gateway does (EdDSA), with a fresh test key."""

    def __init__(self, *, issuer: str = "http://gateway.test", audience: str = "api") -> None:
        self.issuer = issuer
        self.audience = audience
        self._key = Ed25519PrivateKey.generate()
        self.kid = f"test-{uuid.uuid4().hex[:12]}"

    def assertion(
        self,
        sub: str = "test-user",
        *,
        scopes: Iterable[str] = (),
        claims: Mapping[str, Any] | None = None,
        audience: str | None = None,
        ttl: float = 60.0,
        request_id: str | None = None,
    ) -> str:
        """A signed assertion for `sub`; a negative `ttl` gives an expired one."""
        now = int(time.time())
        payload: dict[str, Any] = {
            **(claims or {}),
            "iss": self.issuer,
            "aud": audience or self.audience,
            "sub": sub,
            "iat": now,
            "exp": now + int(ttl),
            "jti": request_id or str(uuid.uuid4()),
        }
        scope = " ".join(scopes)
        if scope:
            payload["scope"] = scope
        return jwt.encode(payload, self._key, algorithm="EdDSA", headers={"kid": self.kid})

    def headers(self, sub: str = "test-user", **kwargs: Any) -> dict[str, str]:
        """`x-fluxlit-identity` with `assertion(sub, **kwargs)`."""
        return {"x-fluxlit-identity": self.assertion(sub, **kwargs)}

    def jwks(self) -> dict[str, Any]:
        """The public key as the gateway publishes its own."""
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self._key.public_key()))
        return {"keys": [{**jwk, "kid": self.kid, "alg": "EdDSA", "use": "sig"}]}

    def verifier(self, *, audience: str | None = None) -> IdentityVerifier:
        """A verifier that trusts this signer's key, for `GatewayIdentity(verifier=...)`."""
        return IdentityVerifier(
            issuer=self.issuer,
            audience=audience or self.audience,
            jwks=StaticKeys(self.jwks()),
        )

    @contextmanager
    def serve_jwks(self) -> Iterator[str]:
        """Serves `jwks()` on 127.0.0.1 while the block runs; yields its URL."""
        body = json.dumps(self.jwks()).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/fluxlit/jwks.json"
        finally:
            server.shutdown()
            server.server_close()
