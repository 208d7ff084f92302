"""FastAPI: take the user from the gateway's signed assertion, not from plain headers.

```python
from fastapi import Depends, FastAPI
from fluxlit_gateway.fastapi import GatewayIdentity, require_scopes
from fluxlit_gateway.identity import Identity

identity = GatewayIdentity()          # FLUXLIT_GATEWAY_URL, FLUXLIT_UPSTREAM_NAME
app = FastAPI()

@app.get("/api/me")
def me(user: Identity = Depends(identity)) -> dict[str, str]:
    return {"sub": user.sub}

@app.post("/api/items", dependencies=[Depends(require_scopes("write", identity=identity))])
def create() -> None: ...
```

A request without a valid assertion gets `401`, one without the scopes `403`. The
dependency is a security scheme: OpenAPI shows `x-fluxlit-identity` as an API key
header on every route that uses it.
"""

# No `from __future__ import annotations` here: FastAPI reads the dependencies'
# annotations at runtime, and those of `require_scopes` name a local variable.

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader

from fluxlit_gateway.client import current_request_id
from fluxlit_gateway.identity import Identity, IdentityError, IdentityVerifier

__all__ = ["GatewayIdentity", "require_scopes"]

log = logging.getLogger("fluxlit_gateway")

IDENTITY_HEADER = "x-fluxlit-identity"
REQUEST_ID_HEADER = "x-request-id"


class GatewayIdentity(APIKeyHeader):
    """A dependency that verifies the gateway's identity assertion and returns it.

    `jwks_url`, `issuer` and `audience` default from the environment, as
    `IdentityVerifier` documents (`FLUXLIT_GATEWAY_URL`, `FLUXLIT_UPSTREAM_NAME`);
    `audience` is this app's upstream name in `fluxlit.toml`, so an assertion the
    gateway signed for another upstream is refused. The keys are fetched from the
    gateway once and cached as it says; a new key id (the gateway's key was rotated)
    fetches them again. It also makes the request id the gateway assigned the current
    one, which `fluxlit_gateway.client.ApiClient` passes on.
    """

    def __init__(
        self,
        *,
        jwks_url: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        header: str = IDENTITY_HEADER,
        verifier: IdentityVerifier | None = None,
        scheme_name: str = "FluxlitIdentity",
    ) -> None:
        super().__init__(
            name=header,
            scheme_name=scheme_name,
            description=(
                "The identity the fluxlit gateway verified, as a JWT it signed. Sent by "
                "the gateway only; requests must come through it."
            ),
            auto_error=False,
        )
        self.verifier = verifier or IdentityVerifier(
            jwks_url=jwks_url, issuer=issuer, audience=audience
        )

    async def __call__(self, request: Request) -> Identity:  # type: ignore[override]
        request_id = request.headers.get(REQUEST_ID_HEADER)
        if request_id:
            current_request_id.set(request_id)
        token = request.headers.get(self.model.name)
        if not token:
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail="no identity from the gateway",
            )
        try:
            return await self.verifier.verify_async(token)
        except IdentityError as error:
            log.warning("identity assertion refused (request %s): %s", request_id, error)
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail="the identity assertion is not valid",
            ) from None


def require_scopes(*scopes: str, identity: GatewayIdentity) -> Callable[..., Awaitable[Identity]]:
    """A dependency that returns the identity when it holds every one of `scopes`,
    and answers `403` when it does not (`401`, as `identity`, without one)."""
    wanted = frozenset(scopes)

    async def scoped(found: Annotated[Identity, Depends(identity)]) -> Identity:
        missing = wanted - found.scopes
        if missing:
            raise HTTPException(
                status_code=status.HTTP_403_FORBIDDEN,
                detail=f"missing scope: {' '.join(sorted(missing))}",
            )
        return found

    return scoped
