"""The example's Streamlit page.

It calls the FastAPI backend server-side, from this Python process, at an internal
base URL: the browser never talks to the API for this page, and the call does not
go back out through the gateway. Keep that base URL on loopback (the default), so
the call never leaves the host.

It also logs users in through the gateway's OpenID Connect endpoints: "Log in" sends
the browser to `/auth/login?next=/`; after the identity provider, the gateway sends it
back here with a one-time `auth_code` in the query. This server trades that code at the
gateway's `POST /auth/exchange` for an access token (sending the code's browser binding,
the value of the `fluxlit-code-<id>` cookie the gateway set in this browser beside the
code, and the gateway's exchange secret), keeps the token in
`st.session_state` (server-side, in this browser tab's session: it never reaches the
browser), takes the code out of the URL, and calls the protected `/api/me` with it.
Those two calls go to the gateway, not to FastAPI directly: the exchange is the
gateway's own endpoint, and `/api/me` is protected by the gateway's token check.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from urllib.parse import urlsplit

import httpx
import streamlit as st

API_BASE = os.environ.get("FLUXLIT_INTERNAL_API_BASE", "http://127.0.0.1:8000/api").rstrip("/")
# The gateway as this server reaches it. The gateway accepts /auth/exchange only from
# its `exchange_from` peers (loopback by default), and the call carries a login code
# and then a bearer token: keep it on loopback, where it never leaves the host.
GATEWAY_BASE = os.environ.get("FLUXLIT_INTERNAL_GATEWAY_BASE", "http://127.0.0.1:8080").rstrip("/")
# The gateway's exchange_secret, sent as `Authorization: Bearer`: the value itself, or a
# file holding it (one trailing newline ignored, as the gateway does). Unset: none sent.
EXCHANGE_SECRET_ENV = "FLUXLIT_EXCHANGE_SECRET"
EXCHANGE_SECRET_FILE_ENV = "FLUXLIT_EXCHANGE_SECRET_FILE"
# Where the browser goes: paths on the origin it already uses (the gateway's).
LOGIN_URL = "/auth/login?next=/"
LOGOUT_URL = "/auth/logout?next=/"


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@st.cache_resource
def api_client() -> httpx.Client:
    # One pooled client for the whole server process, shared by every session;
    # trust_env=False: an HTTP(S)_PROXY meant for the outside world must not carry
    # this internal call.
    return httpx.Client(base_url=API_BASE, timeout=httpx.Timeout(5.0), trust_env=False)


@st.cache_resource
def gateway_client() -> httpx.Client:
    return httpx.Client(base_url=GATEWAY_BASE, timeout=httpx.Timeout(5.0), trust_env=False)


def _link(label: str, href: str) -> None:
    # A same-tab link drawn as a button: st.link_button would open a new tab, and the
    # login must come back to this one. target="_self" keeps it here.
    st.markdown(
        f'<a href="{href}" target="_self" style="display:inline-block;padding:0.35rem 0.9rem;'
        "border:1px solid rgba(49,51,63,0.3);border-radius:0.5rem;text-decoration:none;"
        f'color:inherit">{label}</a>',
        unsafe_allow_html=True,
    )


def _exchange_secret() -> str | None:
    secret = os.environ.get(EXCHANGE_SECRET_ENV)
    if secret:
        return secret
    path = os.environ.get(EXCHANGE_SECRET_FILE_ENV)
    if not path:
        return None
    with open(path, encoding="utf-8") as file:
        secret = file.read()
    secret = secret.removesuffix("\n").removesuffix("\r")
    return secret or None


def _browser_binding(auth_code: str) -> str | None:
    """The code cookie's value in this browser's request, if it has one.

    The gateway's callback sets it beside the redirect that carries the code, named
    `fluxlit-code-<the first 16 hex digits of sha256(code)>` (`__Host-` in front over
    https). It is HttpOnly: scripts on the page cannot read it, but this server sees it
    in the browser's request (the WebSocket handshake Streamlit keeps as
    `st.context.cookies`). A code that arrives in a browser without it was issued to
    another browser: someone sent this one a login link.
    """
    cookie_id = hashlib.sha256(auth_code.encode()).hexdigest()[:16]
    cookies = st.context.cookies
    for name in (f"__Host-fluxlit-code-{cookie_id}", f"fluxlit-code-{cookie_id}"):
        value = cookies.get(name)
        if value:
            return value
    return None


def _exchange(auth_code: str) -> str | None:
    """Trades the one-time code for an access token; an error message, or None."""
    binding = _browser_binding(auth_code)
    if binding is None:
        # The gateway would refuse it: the code belongs to another browser.
        return "this login was not finished in this browser; log in again"
    headers: dict[str, str] = {}
    secret = _exchange_secret()
    if secret:
        headers["authorization"] = f"Bearer {secret}"
    try:
        response = gateway_client().post(
            "/auth/exchange",
            json={"auth_code": auth_code, "browser_binding": binding},
            headers=headers,
        )
    except httpx.HTTPError as error:
        return f"the gateway's /auth/exchange could not be reached: {error}"
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        answer = {}
    if response.status_code != 200 or not isinstance(answer.get("access_token"), str):
        # invalid_grant: the code was used already (a reload of the old URL), expired, or
        # is not this browser's; invalid_client: the exchange secret is missing or wrong.
        reason = answer.get("error", response.status_code)
        return f"the login code was refused ({reason}); log in again"
    st.session_state["access_token"] = answer["access_token"]
    return None


def login_section() -> None:
    st.subheader("Log in")
    gateway_ok = _is_loopback(GATEWAY_BASE) or urlsplit(GATEWAY_BASE).scheme == "https"
    if not gateway_ok:
        st.error(
            f"`FLUXLIT_INTERNAL_GATEWAY_BASE` ({GATEWAY_BASE}) is plain http off loopback: "
            "login codes and tokens would cross the network in clear, so login is off."
        )
        return

    auth_code = st.query_params.get("auth_code")
    if auth_code is not None:
        # Out of the address bar (and the history entry) first; the code is one-time.
        del st.query_params["auth_code"]
        error = _exchange(auth_code)
        if error and "access_token" not in st.session_state:
            st.warning(error)

    token = st.session_state.get("access_token")
    if not token:
        st.write(
            "Log in at the identity provider; the gateway then hands this page a one-time "
            "code, which Streamlit trades server-side for a token that `/api/me` accepts."
        )
        _link("Log in", LOGIN_URL)
        return

    try:
        response = gateway_client().get("/api/me", headers={"authorization": f"Bearer {token}"})
    except httpx.HTTPError as error:
        st.error(f"The call to /api/me failed: {error}")
        return
    if response.status_code == 401:
        # Expired (or the gateway's key changed): the token is of no more use.
        del st.session_state["access_token"]
        st.warning("Your login has expired; log in again.")
        _link("Log in", LOGIN_URL)
        return
    if response.status_code != 200:
        st.error(f"/api/me answered {response.status_code}: {response.text[:200]}")
        return
    me = response.json()
    st.success(f"Logged in as {me['sub']}")
    st.caption(
        "FastAPI's `/api/me`, called server-side through the gateway with the token; "
        "the gateway checked it and told FastAPI who you are:"
    )
    st.json(me)
    _link("Log out", LOGOUT_URL)


st.set_page_config(page_title="FluxLit: Streamlit + FastAPI", page_icon=":electric_plug:")
st.title("Streamlit + FastAPI behind FluxLit")
st.write(
    "This page is served by Streamlit through the gateway; the button below makes "
    f"Streamlit call FastAPI **server-side** at `{API_BASE}`."
)
if not _is_loopback(API_BASE):
    st.warning(
        "`FLUXLIT_INTERNAL_API_BASE` does not point at loopback: this server-side "
        "call leaves the host."
    )

with st.form("hello"):
    name = st.text_input("Your name", value="FluxLit")
    submitted = st.form_submit_button("Call the API")

if submitted:
    try:
        response = api_client().get("/hello", params={"name": name})
        response.raise_for_status()
        answer = response.json()
    except (httpx.HTTPError, ValueError) as error:
        st.error(f"The API call failed: {error}")
    else:
        st.success(answer["message"])
        st.caption(f"Answered by {answer['served_by']} at `{answer['path']}`.")
        st.json(answer)

login_section()
