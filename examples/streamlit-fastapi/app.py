"""The example's FastAPI backend.

The gateway keeps the `/api` prefix when it forwards (`strip_prefix = false`, the
default), so every route here carries it: the app answers at the same paths
whether it is reached through the gateway or directly on loopback. The docs and the
OpenAPI document live under the prefix too, so they are reachable through the
gateway (`/api/docs`) instead of falling through to Streamlit.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

from fastapi import APIRouter, FastAPI, HTTPException, Request

API_PREFIX = "/api"

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
def me(request: Request) -> dict[str, object]:
    """Who is logged in, as the gateway verified it.

    The gateway's route for `/api/me` has `auth = "main"`: it checks the bearer token
    (signature, issuer, audience, expiry) before this app is contacted, and sends the
    identity as `x-fluxlit-*` headers, which it never lets through from a client. So
    this app believes those headers, and does nothing with the token itself; it must
    therefore be reachable through the gateway only (it listens on loopback).
    """
    sub = request.headers.get("x-fluxlit-sub")
    if not sub:
        # Only possible when the gateway was bypassed, or its route lost its auth.
        raise HTTPException(status_code=401, detail="no identity from the gateway")
    return {
        "sub": sub,
        "email": request.headers.get("x-fluxlit-email"),
        "name": request.headers.get("x-fluxlit-name"),
        "verified_by": "fluxlit",
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
