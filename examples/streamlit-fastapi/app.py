"""The example's FastAPI backend.

The gateway keeps the `/api` prefix when it forwards (`strip_prefix = false`, the
default), so every route here carries it: the app answers at the same paths
whether it is reached through the gateway or directly on loopback. The docs and the
OpenAPI document live under the prefix too, so they are reachable through the
gateway (`/api/docs`) instead of falling through to Streamlit.
"""

import os
from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fluxlit_gateway.fastapi import GatewayIdentity
from fluxlit_gateway.identity import Identity

API_PREFIX = "/api"

# Who the gateway verified, from its signed x-fluxlit-identity: the gateway's keys from
# FLUXLIT_GATEWAY_URL, this upstream's name (the assertion's audience) from
# FLUXLIT_UPSTREAM_NAME=api, the issuer (the gateway's public_base_url) from
# FLUXLIT_GATEWAY_ISSUER when it differs from FLUXLIT_GATEWAY_URL (run.sh sets them).
# A request that did not come through a route with `auth` gets 401, whatever
# x-fluxlit-* headers it carries.
identity = GatewayIdentity()
User = Annotated[Identity, Depends(identity)]

app = FastAPI(
    title="FluxLit example API",
    docs_url=f"{API_PREFIX}/docs",
    redoc_url=None,
    openapi_url=f"{API_PREFIX}/openapi.json",
)
router = APIRouter(prefix=API_PREFIX)


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/hello")
def hello(request: Request, name: str = "world") -> dict[str, object]:
    """What the Streamlit page shows after its button is clicked."""
    return {
        "message": f"Hello, {name}!",
        "served_by": "FastAPI",
        "pid": os.getpid(),
        "path": request.url.path,
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


@router.get("/me")
def me(user: User) -> dict[str, object]:
    """Who is logged in, as the gateway verified it.

    The gateway's route for `/api/me` has `auth = "main"`: it checks the bearer token
    (signature, issuer, audience, expiry) before this app is contacted, then signs what
    it verified for this upstream; `identity` checks that signature.
    """
    return {
        "sub": user.sub,
        "email": user.get("email"),
        "name": user.get("name"),
        "verified_by": "fluxlit",
        "served_by": "FastAPI",
    }


@router.get("/browser/me")
def browser_me(user: User, request: Request) -> dict[str, object]:
    """The same, for the browser's own calls with the login session (route
    `browser-api`); also which cookies arrived, so a test can see that the session
    cookie never does."""
    return {
        "sub": user.sub,
        "email": user.get("email"),
        "name": user.get("name"),
        "cookies": sorted(request.cookies),
        "served_by": "FastAPI",
    }


def _echo(request: Request) -> dict[str, object]:
    # The raw request as this app received it: the path exactly as sent (still
    # percent-encoded) and every header in order, repeated ones included, so a test
    # can check what the gateway forwarded and what it kept out.
    return {
        "method": request.method,
        "path": request.scope["path"],
        "raw_path": request.scope["raw_path"].decode("latin-1"),
        "query": request.scope["query_string"].decode("latin-1"),
        "headers": [[name, value] for name, value in request.headers.items()],
    }


@router.api_route("/echo", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def echo_root(request: Request) -> dict[str, object]:
    return _echo(request)


@router.api_route("/echo/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def echo(request: Request, rest: str) -> dict[str, object]:
    return _echo(request)


app.include_router(router)
