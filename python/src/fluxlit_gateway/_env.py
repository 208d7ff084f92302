"""The environment variables the package reads its defaults from, in one place."""

from __future__ import annotations

import os

# The gateway as this server reaches it (e.g. http://127.0.0.1:8080): its JWKS and its
# /auth/exchange are fetched there.
GATEWAY_URL = "FLUXLIT_GATEWAY_URL"
# The gateway's public_base_url, the `iss` of its assertions (default: GATEWAY_URL).
GATEWAY_ISSUER = "FLUXLIT_GATEWAY_ISSUER"
# Where the gateway's public keys are (default: GATEWAY_URL + JWKS_PATH).
GATEWAY_JWKS_URL = "FLUXLIT_GATEWAY_JWKS_URL"
# This upstream's name in fluxlit.toml, the `aud` of the assertions it receives.
UPSTREAM_NAME = "FLUXLIT_UPSTREAM_NAME"
# The gateway's exchange_secret, or a file holding it.
EXCHANGE_SECRET = "FLUXLIT_EXCHANGE_SECRET"  # noqa: S105 (variable names, not secrets)
EXCHANGE_SECRET_FILE = "FLUXLIT_EXCHANGE_SECRET_FILE"  # noqa: S105
# The internal base URL ApiClient calls (e.g. http://127.0.0.1:8000/api).
INTERNAL_API_BASE = "FLUXLIT_INTERNAL_API_BASE"

JWKS_PATH = "/.well-known/fluxlit/jwks.json"


def required(name: str, what: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ValueError(f"{what} is not set: pass it, or set {name}")
    return value


def gateway_url() -> str:
    return required(GATEWAY_URL, "the gateway's URL").rstrip("/")


def issuer() -> str:
    return os.environ.get(GATEWAY_ISSUER, "").strip() or gateway_url()


def jwks_url() -> str:
    return os.environ.get(GATEWAY_JWKS_URL, "").strip() or gateway_url() + JWKS_PATH


def exchange_secret() -> str | None:
    """The exchange secret: the variable's value, or the file it names (one trailing
    newline ignored, as the gateway reads it). Neither set: None."""
    secret = os.environ.get(EXCHANGE_SECRET)
    if secret:
        return secret
    path = os.environ.get(EXCHANGE_SECRET_FILE)
    if not path:
        return None
    with open(path, encoding="utf-8") as file:
        secret = file.read()
    secret = secret.removesuffix("\n").removesuffix("\r")
    if not secret:
        raise ValueError(f"{EXCHANGE_SECRET_FILE} names an empty file")
    return secret
