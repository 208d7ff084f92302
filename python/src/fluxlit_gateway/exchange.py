"""The auth-code flow, for apps that want the login's access token on their server.

After a login, the gateway sends the browser to `next` with a one-time `auth_code` in
the query, and sets beside it a cookie that binds the code to that browser
(`fluxlit-code-<16 hex digits of sha256(code)>`, `__Host-` in front over https;
HttpOnly, so only the app's server sees it in the browser's request). The server
trades code and binding at the gateway's `POST /auth/exchange`, sending the gateway's
`exchange_secret` as a bearer, for the access token; a code works once.
`fluxlit_gateway.streamlit.finish_login` does this for a Streamlit page.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from fluxlit_gateway import _env

__all__ = ["AccessToken", "LoginFailed", "browser_binding", "exchange_code"]

EXCHANGE_PATH = "/auth/exchange"
# A token this close to its expiry is treated as expired: a call made with it would
# likely arrive too late.
EXPIRY_MARGIN = 10.0


class LoginFailed(Exception):
    """The gateway refused the exchange; `error` is its OAuth error code
    (`invalid_grant`: used, expired, or another browser's code; `invalid_client`: the
    exchange secret is missing or wrong), or why it could not be asked."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error


@dataclass(frozen=True)
class AccessToken:
    """The access token of a login, and when it expires (`time.time()` seconds)."""

    value: str = field(repr=False)
    expires_at: float

    def expired(self, now: float | None = None) -> bool:
        """Whether it has expired, or is about to."""
        return (time.time() if now is None else now) >= self.expires_at - EXPIRY_MARGIN

    def headers(self) -> dict[str, str]:
        """`Authorization: Bearer ...` for a call with it."""
        return {"authorization": f"Bearer {self.value}"}


def code_cookie_names(auth_code: str) -> tuple[str, str]:
    """The two names the gateway gives the code's cookie (https first)."""
    cookie_id = hashlib.sha256(auth_code.encode()).hexdigest()[:16]
    return f"__Host-fluxlit-code-{cookie_id}", f"fluxlit-code-{cookie_id}"


def browser_binding(auth_code: str, cookies: Mapping[str, str]) -> str | None:
    """The code's binding from the browser's cookies, or None when this browser has no
    cookie for the code (someone sent it another browser's login link)."""
    for name in code_cookie_names(auth_code):
        value = cookies.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def exchange_code(
    auth_code: str,
    binding: str,
    *,
    gateway_url: str | None = None,
    exchange_secret: str | None = None,
    timeout: float = 5.0,
) -> AccessToken:
    """Trades a login's `auth_code` and its browser binding for the access token.

    `gateway_url` is the gateway as this server reaches it (default
    `FLUXLIT_GATEWAY_URL`); it must be https or on loopback, since the call carries the
    code and the answer the token. `exchange_secret` defaults to
    `FLUXLIT_EXCHANGE_SECRET` or the file `FLUXLIT_EXCHANGE_SECRET_FILE` names.
    """
    base = (gateway_url or _env.gateway_url()).rstrip("/")
    _check_gateway(base)
    secret = exchange_secret if exchange_secret is not None else _env.exchange_secret()
    headers = {"authorization": f"Bearer {secret}"} if secret else {}
    try:
        with httpx.Client(timeout=timeout, trust_env=False) as client:
            response = client.post(
                base + EXCHANGE_PATH,
                json={"auth_code": auth_code, "browser_binding": binding},
                headers=headers,
            )
    except httpx.HTTPError as error:
        raise LoginFailed("unreachable", f"the gateway's {EXCHANGE_PATH} failed: {error}") from None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        answer = {}
    token = answer.get("access_token")
    expires_in = answer.get("expires_in")
    if response.status_code != 200 or not isinstance(token, str):
        code = str(answer.get("error") or response.status_code)
        raise LoginFailed(code, f"the gateway refused the login code ({code})")
    if not isinstance(expires_in, int | float):
        raise LoginFailed("invalid_response", "the gateway's answer has no expires_in")
    return AccessToken(value=token, expires_at=time.time() + float(expires_in))


def _check_gateway(base: str) -> None:
    parts = urlsplit(base)
    if parts.scheme == "https":
        return
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme != "http" or not loopback:
        raise ValueError(
            f"the gateway URL {base!r} is neither https nor on loopback: the login code "
            "and the token would cross the network in clear"
        )
