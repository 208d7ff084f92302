"""Streamlit: who is signed in, links to log in and out, and the login's token.

Put the UI route behind a session in `fluxlit.toml` (`auth = "<oidc provider>"`) and
the gateway logs users in before Streamlit sees them; the page asks who it is:

```python
import streamlit as st
from fluxlit_gateway.streamlit import current_user, logout_url

user = current_user()             # None when the page was reached without the gateway
if user:
    st.write(f"Signed in as {user.get('name', user.sub)}")
    st.link_button("Log out", logout_url())
```

`current_user()` verifies the `x-fluxlit-identity` assertion that the gateway put on
the WebSocket handshake of this browser tab (`st.context.headers`), as
`fluxlit_gateway.identity.IdentityVerifier` does (`FLUXLIT_GATEWAY_URL`,
`FLUXLIT_UPSTREAM_NAME` = the UI upstream's name). The assertion is checked, expiry
included, the first time the tab's session asks, right after the handshake; the
answer is then kept for that session. That is sound because the handshake is the
proof: the gateway closes the tab's WebSocket (1008) as soon as the login session
ends — logout on any replica, expiry, a refresh refused by the identity provider — and
a reconnect must pass the gateway again, with a new assertion.

For the auth-code flow (an access token on this server, to call an API protected by
a bearer check), call `finish_login()` at the top of the page and `bearer_headers()`
for each call.
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import quote

import streamlit as st

from fluxlit_gateway.exchange import AccessToken, LoginFailed, browser_binding, exchange_code
from fluxlit_gateway.identity import Identity, IdentityError, IdentityVerifier

__all__ = [
    "LoginFailed",
    "bearer_headers",
    "current_user",
    "finish_login",
    "login_url",
    "logout_url",
    "request_id",
]

log = logging.getLogger("fluxlit_gateway")

IDENTITY_HEADER = "x-fluxlit-identity"
LOGIN_PATH = "/auth/login"
LOGOUT_PATH = "/auth/logout"
_IDENTITY_KEY = "_fluxlit_identity"
_TOKEN_KEY = "_fluxlit_access_token"  # noqa: S105 (a session_state key, not a secret)

_verifier_lock = threading.Lock()
_default_verifier: IdentityVerifier | None = None


def _verifier() -> IdentityVerifier:
    # One per process, shared by every session: the keys are fetched once.
    global _default_verifier
    with _verifier_lock:
        if _default_verifier is None:
            _default_verifier = IdentityVerifier()
        return _default_verifier


def current_user(verifier: IdentityVerifier | None = None) -> Identity | None:
    """The identity the gateway verified for this browser tab, or None.

    None when the tab's connection carries no assertion (the route has no `auth`, or
    the page was reached without the gateway) or one that does not verify (logged as a
    warning). `verifier` defaults to one built from the environment.
    """
    token = st.context.headers.get(IDENTITY_HEADER)
    if not isinstance(token, str) or not token:
        return None
    kept = st.session_state.get(_IDENTITY_KEY)
    if isinstance(kept, tuple) and kept[0] == token:
        identity: Identity = kept[1]
        return identity
    try:
        identity = (verifier or _verifier()).verify(token)
    except IdentityError as error:
        log.warning("identity assertion refused: %s", error)
        return None
    st.session_state[_IDENTITY_KEY] = (token, identity)
    return identity


def request_id() -> str | None:
    """The request id the gateway gave this tab's connection (for ApiClient's
    `request_id_factory`), or None."""
    value = st.context.headers.get("x-request-id")
    return value if isinstance(value, str) and value else None


def login_url(next: str = "/", *, path: str = LOGIN_PATH) -> str:
    """The gateway's login, coming back to `next` (a path on this origin)."""
    return f"{path}?next={quote(_relative(next), safe='/')}"


def logout_url(next: str = "/", *, path: str = LOGOUT_PATH) -> str:
    """The gateway's logout, coming back to `next` (a path on this origin)."""
    return f"{path}?next={quote(_relative(next), safe='/')}"


def _relative(next_path: str) -> str:
    if not next_path.startswith("/") or next_path.startswith("//") or "\\" in next_path:
        raise ValueError(f"next must be a path on this origin, like /page: {next_path!r}")
    return next_path


def finish_login(*, gateway_url: str | None = None, exchange_secret: str | None = None) -> bool:
    """Finishes an auth-code login on this page, if the URL carries one.

    Takes `auth_code` out of the query (and the address bar) at once, reads its browser
    binding from this tab's cookies, trades both server-side at the gateway (see
    `fluxlit_gateway.exchange.exchange_code` for the arguments' defaults) and keeps the
    token in `st.session_state`, never in the browser. Returns True when a token was
    obtained, False when there was no code; raises `LoginFailed` when the gateway
    refused it (used already, e.g. a reload of the old URL; another browser's; expired).
    """
    auth_code = st.query_params.get("auth_code")
    if auth_code is None:
        return False
    del st.query_params["auth_code"]
    binding = browser_binding(auth_code, st.context.cookies)
    if binding is None:
        raise LoginFailed("invalid_grant", "this login was not finished in this browser")
    token = exchange_code(
        auth_code, binding, gateway_url=gateway_url, exchange_secret=exchange_secret
    )
    st.session_state[_TOKEN_KEY] = token
    return True


def bearer_headers() -> dict[str, str]:
    """`Authorization: Bearer <the login's token>` for a call from this server, or
    `{}` when this session has no token or it expired (it is then forgotten)."""
    token = st.session_state.get(_TOKEN_KEY)
    if not isinstance(token, AccessToken):
        return {}
    if token.expired():
        del st.session_state[_TOKEN_KEY]
        return {}
    return token.headers()
