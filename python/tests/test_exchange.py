"""exchange_code against the real gateway's /auth/exchange: what it refuses, and why."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from conftest import Gateway, free_port

from fluxlit_gateway.exchange import (
    AccessToken,
    LoginFailed,
    browser_binding,
    code_cookie_names,
    exchange_code,
)


def oidc_config(tmp_path: Path) -> str:
    (tmp_path / "client-secret").write_text(secrets.token_urlsafe(32))
    (tmp_path / "exchange-secret").write_text(secrets.token_urlsafe(32))
    (tmp_path / "hs256").write_text(secrets.token_urlsafe(32))
    # No identity provider answers there: the exchange endpoint does not need one.
    return f"""
[auth.providers.idp]
kind = "oidc"
issuer_url = "http://127.0.0.1:{free_port()}"
client_id = "tests"
client_secret = {{ file = "client-secret" }}
mint = "main"
exchange_secret = {{ file = "exchange-secret" }}

[auth.providers.main]
kind = "jwt"
issuer = "https://gateway.test"
audience = "tests"
algorithms = ["HS256"]
hs256_secret = {{ file = "hs256" }}
"""


def test_the_gateway_refuses_unknown_codes_and_a_missing_secret(
    fluxlit_bin: Path, tmp_path: Path
) -> None:
    config = oidc_config(tmp_path)
    with Gateway(fluxlit_bin, tmp_path, config) as gateway:
        secret = (tmp_path / "exchange-secret").read_text()
        with pytest.raises(LoginFailed) as unknown:
            exchange_code("made-up", "binding", gateway_url=gateway.url, exchange_secret=secret)
        assert unknown.value.error == "invalid_grant"
        with pytest.raises(LoginFailed) as secretless:
            exchange_code("made-up", "binding", gateway_url=gateway.url, exchange_secret="")
        assert secretless.value.error == "invalid_client"
        with pytest.raises(LoginFailed) as wrong:
            exchange_code("made-up", "binding", gateway_url=gateway.url, exchange_secret="x" * 40)
        assert wrong.value.error == "invalid_client"


def test_the_exchange_secret_is_read_from_the_environment(
    fluxlit_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = oidc_config(tmp_path)
    with Gateway(fluxlit_bin, tmp_path, config) as gateway:
        monkeypatch.setenv("FLUXLIT_GATEWAY_URL", gateway.url)
        monkeypatch.setenv("FLUXLIT_EXCHANGE_SECRET_FILE", str(tmp_path / "exchange-secret"))
        with pytest.raises(LoginFailed) as refused:
            exchange_code("made-up", "binding")
        # Past the secret check: only the code is wrong.
        assert refused.value.error == "invalid_grant"


def test_a_gateway_off_loopback_over_plain_http_is_refused() -> None:
    with pytest.raises(ValueError, match="in clear"):
        exchange_code("code", "binding", gateway_url="http://gateway.example", exchange_secret="s")


def test_a_code_needs_its_cookie_from_this_browser() -> None:
    https_name, http_name = code_cookie_names("the-code")
    assert https_name == "__Host-" + http_name
    assert http_name.startswith("fluxlit-code-")
    assert len(http_name) == len("fluxlit-code-") + 16
    assert browser_binding("the-code", {http_name: "b1"}) == "b1"
    assert browser_binding("the-code", {https_name: "b2"}) == "b2"
    assert browser_binding("the-code", {"fluxlit-code-0000000000000000": "b3"}) is None


def test_an_access_token_expires_a_little_early() -> None:
    token = AccessToken(value="t", expires_at=1000.0)
    assert not token.expired(now=980.0)
    assert token.expired(now=995.0)
    assert token.headers() == {"authorization": "Bearer t"}
    assert "t" not in repr(token).replace("AccessToken", "").replace("expires_at", "")
