"""The example's Streamlit page.

It calls the FastAPI backend server-side, from this Python process, at an internal
base URL: the browser never talks to the API for this page, and the call does not
go back out through the gateway. Keep that base URL on loopback (the default), so
the call never leaves the host.
"""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlsplit

import httpx
import streamlit as st

API_BASE = os.environ.get("FLUXLIT_INTERNAL_API_BASE", "http://127.0.0.1:8000/api").rstrip("/")


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
