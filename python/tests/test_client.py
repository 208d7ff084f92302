"""ApiClient: relative paths on an internal base URL, and nothing else."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from fluxlit_gateway.client import ApiClient, UnsafePathError, current_request_id


class Recorder(BaseHTTPRequestHandler):
    """Answers every GET with the path and headers it received."""

    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "headers": dict(self.headers.items())}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "target",
    [
        "http://evil.example/x",
        "https://evil.example/x",
        "//evil.example/x",
        "\\\\evil.example",
        "/\\evil.example/x",
        "../admin",
        "/items/../../admin",
        "javascript:alert(1)",
        " http://evil.example/",
        httpx.URL("http://evil.example/x"),
    ],
)
def test_anything_but_a_path_under_the_base_is_refused(api: str, target: str | httpx.URL) -> None:
    with ApiClient(api) as client, pytest.raises(UnsafePathError):
        client.get(target)


def test_a_request_built_by_hand_for_another_host_is_refused(api: str) -> None:
    with ApiClient(api) as client:
        request = httpx.Request("GET", "http://evil.example/x")
        with pytest.raises(UnsafePathError):
            client.send(request)


def test_paths_go_to_the_base_with_the_auth_headers_and_the_request_id(
    api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy from the environment is ignored: the call stays on loopback.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    calls = 0

    def auth() -> dict[str, str]:
        nonlocal calls
        calls += 1
        return {"authorization": f"Bearer token-{calls}"}

    token = current_request_id.set("req-42")
    try:
        with ApiClient(api, auth_header_factory=auth) as client:
            first = client.get("/items", params={"q": "a b"}).json()
            second = client.get("items/7", headers={"authorization": "Bearer mine"}).json()
    finally:
        current_request_id.reset(token)
    assert first["path"] == "/api/items?q=a+b"
    assert first["headers"]["authorization"] == "Bearer token-1"
    assert first["headers"]["x-request-id"] == "req-42"
    assert second["path"] == "/api/items/7"
    assert second["headers"]["authorization"] == "Bearer mine", "the call's own header wins"


def test_the_base_must_be_internal_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    for base in [
        "http://127.0.0.1:8000/api",
        "http://10.1.2.3",
        "http://[::1]:8000",
        "http://localhost:8000",
        "http://api:8000",
        "http://api.default.svc.cluster.local",
        "http://backend.internal",
    ]:
        ApiClient(base).close()
    for base in ["http://api.example.com", "https://8.8.8.8", "ftp://127.0.0.1/", "api"]:
        with pytest.raises(ValueError, match="base URL"):
            ApiClient(base)
    ApiClient("https://api.example.com", allow_public_base=True).close()
    monkeypatch.setenv("FLUXLIT_INTERNAL_API_BASE", "http://127.0.0.1:8000/api")
    with ApiClient() as client:
        assert str(client.base_url) == "http://127.0.0.1:8000/api/"
    monkeypatch.delenv("FLUXLIT_INTERNAL_API_BASE")
    with pytest.raises(ValueError, match="FLUXLIT_INTERNAL_API_BASE"):
        ApiClient()
    with pytest.raises(TypeError):
        ApiClient("http://127.0.0.1", trust_env=True)
