"""The Streamlit helpers in a real Streamlit script run (AppTest)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from fluxlit_gateway.streamlit import login_url, logout_url


def finish_login_page() -> None:
    import streamlit as st

    from fluxlit_gateway.streamlit import LoginFailed, bearer_headers, current_user, finish_login

    try:
        st.write(f"finished: {finish_login(gateway_url='http://127.0.0.1:9')}")
    except LoginFailed as error:
        st.write(f"refused: {error.error}: {error}")
    st.write(f"headers: {bearer_headers()}")
    st.write(f"user: {current_user()}")


def test_finish_login_takes_the_code_out_of_the_url_and_needs_this_browsers_cookie() -> None:
    page = AppTest.from_function(finish_login_page)
    page.query_params["auth_code"] = "a-code-from-a-link"
    page.query_params["tab"] = "2"
    page.run()
    assert not page.exception
    shown = [element.value for element in page.markdown]
    # No code cookie in this browser: refused before the gateway is called (port 9
    # answers nothing, so a call would say "unreachable").
    assert shown[0].startswith("refused: invalid_grant: this login was not finished in this")
    assert shown[1] == "headers: {}"
    # Without the gateway in front, there is no identity.
    assert shown[2] == "user: None"
    assert "auth_code" not in page.query_params
    assert page.query_params["tab"] == "2"


def test_without_a_code_there_is_nothing_to_finish() -> None:
    page = AppTest.from_function(finish_login_page)
    page.run()
    assert [element.value for element in page.markdown][:2] == ["finished: False", "headers: {}"]


def test_login_and_logout_links_come_back_to_a_path_on_this_origin() -> None:
    assert login_url() == "/auth/login?next=/"
    assert login_url("/reports?id=7&x=a b") == "/auth/login?next=/reports%3Fid%3D7%26x%3Da%20b"
    assert logout_url("/bye", path="/sso/logout") == "/sso/logout?next=/bye"
    for bad in ["https://evil.example/", "//evil.example/", "/\\evil.example", "page"]:
        with pytest.raises(ValueError, match="path on this origin"):
            login_url(bad)
