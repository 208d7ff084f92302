"""The example's Streamlit page.

The gateway's route for this UI has `auth = "idp"`: nobody reaches this script without
logging in first, and the page has no login code. It asks `current_user()` who is
signed in: the identity the gateway verified, from the signed `x-fluxlit-identity` on
this tab's WebSocket handshake (checked against the gateway's keys, for the audience
`ui`). When the user logs out, on any tab or replica, the gateway closes this tab's
WebSocket.

It calls FastAPI two ways, both server-side from this Python process with the
package's `ApiClient`, which takes paths only (never a URL a user could point
elsewhere):

- `/api/hello` directly at the internal base URL (FLUXLIT_INTERNAL_API_BASE, on
  loopback): no gateway in between, no identity needed;
- `/api/me` through the gateway, with the login's access token: after a login the
  gateway hands this page a one-time `auth_code`; `finish_login()` trades it
  server-side (with the exchange secret and the code's browser binding) for the token,
  kept in `st.session_state`, never in the browser; `bearer_headers()` sends it.
"""

import os

import streamlit as st
from fluxlit_gateway.client import ApiClient
from fluxlit_gateway.streamlit import (
    LoginFailed,
    bearer_headers,
    current_user,
    finish_login,
    login_url,
    logout_url,
    request_id,
)

API_BASE = os.environ.get("FLUXLIT_INTERNAL_API_BASE", "http://127.0.0.1:8000/api")
# The gateway as this server reaches it: keep it on loopback (or https), since the
# exchange carries a login code and then a token.
GATEWAY_URL = os.environ.get("FLUXLIT_GATEWAY_URL", "http://127.0.0.1:8080").rstrip("/")


@st.cache_resource
def internal_api() -> ApiClient:
    # One pooled client for the whole server process, shared by every session; the
    # request id of this tab's connection goes along, for the logs.
    return ApiClient(API_BASE, request_id_factory=request_id)


@st.cache_resource
def gateway_api() -> ApiClient:
    # The same through the gateway, with the current session's token when it has one.
    return ApiClient(
        f"{GATEWAY_URL}/api", auth_header_factory=bearer_headers, request_id_factory=request_id
    )


def link(label: str, href: str) -> None:
    # A same-tab link drawn as a button: st.link_button opens a new tab, and the login
    # must come back to this one.
    st.markdown(
        f'<a href="{href}" target="_self" style="display:inline-block;padding:0.35rem 0.9rem;'
        "border:1px solid rgba(49,51,63,0.3);border-radius:0.5rem;text-decoration:none;"
        f'color:inherit">{label}</a>',
        unsafe_allow_html=True,
    )


def hello_section() -> None:
    st.subheader("Call the API")
    with st.form("hello"):
        name = st.text_input("Your name", value="FluxLit")
        submitted = st.form_submit_button("Call the API")
    if not submitted:
        return
    try:
        response = internal_api().get("/hello", params={"name": name})
        response.raise_for_status()
    except Exception as error:  # noqa: BLE001 - shown on the page, whatever it was
        st.error(f"The API call failed: {error}")
        return
    answer = response.json()
    st.success(answer["message"])
    st.caption(f"Answered by {answer['served_by']} at {answer['path']}")


def me_section() -> None:
    st.subheader("The API, as you")
    try:
        finish_login(gateway_url=GATEWAY_URL)
    except LoginFailed as error:
        # A reload of the old URL (the code works once), or another browser's code.
        st.warning(f"The login's code was refused ({error.error}).")
    if not bearer_headers():
        st.write(
            "To call `/api/me` as you, this server needs the login's access token. The "
            "gateway hands it over once after a login; the identity provider remembers "
            "you, so this takes no password."
        )
        link("Get an API token", login_url("/"))
        return
    response = gateway_api().get("/me")
    if response.status_code != 200:
        st.error(f"/api/me answered {response.status_code}: {response.text[:200]}")
        return
    st.caption(
        "FastAPI's `/api/me`, called server-side through the gateway with the token; "
        "the gateway checked it and signed who you are for FastAPI, which checked that:"
    )
    st.json(response.json())


st.set_page_config(page_title="FluxLit: Streamlit + FastAPI", page_icon=":electric_plug:")
st.title("Streamlit + FastAPI behind FluxLit")

user = current_user()
if user is None:
    st.error(
        "No verified identity: open this page through the gateway, whose route for it "
        'has auth = "idp" (see fluxlit.toml).'
    )
    st.stop()

st.success(f"Signed in as {user.get('name') or user.sub}")
st.caption(f"Subject `{user.sub}`, email `{user.get('email')}`, verified by the gateway.")
link("Log out", logout_url("/"))

hello_section()
me_section()
