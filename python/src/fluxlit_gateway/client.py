"""A server-side HTTP client that can only call the app's own internal API.

`ApiClient` is an `httpx.Client` bound to one internal base URL (by default
`FLUXLIT_INTERNAL_API_BASE`, e.g. `http://127.0.0.1:8000/api`). It takes paths, not
URLs: an absolute URL (`http://evil.example/x`), a scheme-relative one
(`//evil.example/x`), a backslash (`\\\\evil.example`, which some parsers read as a
host) or a `..` segment is refused with `UnsafePathError`, so a value that reaches a
call from user input cannot point the server at another host (SSRF). The base must
be on loopback, a private network, or an internal name (`localhost`, a single-label
service name such as `api`, `*.internal`, `*.local`, `*.svc`, `*.cluster.local`),
unless `allow_public_base=True`. It ignores `HTTP(S)_PROXY` (`trust_env=False`),
follows no redirects, has timeouts, adds the headers of `auth_header_factory` to every
request, and passes the current request id on as `x-request-id`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

import httpx

from fluxlit_gateway import _env

__all__ = ["ApiClient", "UnsafePathError", "current_request_id"]

# The request id of the request being served, where a framework integration set it
# (`fluxlit_gateway.fastapi.GatewayIdentity` does); ApiClient sends it on.
current_request_id: ContextVar[str | None] = ContextVar("fluxlit_request_id", default=None)

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=2.0)
REQUEST_ID_HEADER = "x-request-id"
_INTERNAL_SUFFIXES = (".localhost", ".internal", ".local", ".svc", ".cluster.local")


class UnsafePathError(ValueError):
    """A call named something other than a path under the client's base URL."""


class ApiClient(httpx.Client):
    """An `httpx.Client` that calls relative paths on an internal base URL only.

    `auth_header_factory` is called for every request and its headers added (a
    header the call sets itself wins); `request_id_factory` gives the request id to
    pass on (default: `current_request_id`). Other keyword arguments go to
    `httpx.Client`, except `base_url` rules and `trust_env`, which this class owns.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        allow_public_base: bool = False,
        auth_header_factory: Callable[[], Mapping[str, str]] | None = None,
        request_id_factory: Callable[[], str | None] = current_request_id.get,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        base = base_url or _env.required(_env.INTERNAL_API_BASE, "the internal API base URL")
        base = base.rstrip("/")
        _check_base(base, allow_public=allow_public_base)
        if "trust_env" in kwargs:
            raise TypeError("ApiClient never reads proxies from the environment")
        super().__init__(
            base_url=base, timeout=timeout, trust_env=False, follow_redirects=False, **kwargs
        )
        self._origin = httpx.URL(base)
        self._auth_header_factory = auth_header_factory
        self._request_id_factory = request_id_factory

    def build_request(self, method: str, url: httpx.URL | str, **kwargs: Any) -> httpx.Request:
        """As httpx's, for a path under the base URL only."""
        _check_path(url)
        request = super().build_request(method, url, **kwargs)
        if self._auth_header_factory is not None:
            for name, value in self._auth_header_factory().items():
                if name not in request.headers:
                    request.headers[name] = value
        request_id = self._request_id_factory()
        if request_id and REQUEST_ID_HEADER not in request.headers:
            request.headers[REQUEST_ID_HEADER] = request_id
        return request

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        """As httpx's, for a request to the base URL's origin only (a request built by
        hand is checked here too)."""
        url = request.url
        base = self._origin
        if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port):
            raise UnsafePathError(f"{url} is not on the API's base URL {base}")
        return super().send(request, **kwargs)


def _check_path(url: httpx.URL | str) -> None:
    if isinstance(url, httpx.URL):
        if url.is_absolute_url or url.host:
            raise UnsafePathError(f"an absolute URL is refused, pass a path: {url}")
        url = str(url)
    if not isinstance(url, str):
        raise UnsafePathError(f"a path must be a string, not {type(url).__name__}")
    path = url.split("?", 1)[0].split("#", 1)[0]
    if "\\" in path:
        raise UnsafePathError(f"a backslash in the path is refused: {url!r}")
    if url.startswith("//"):
        raise UnsafePathError(f"a scheme-relative URL is refused, pass a path: {url!r}")
    if any(ord(char) < 0x21 or ord(char) == 0x7F for char in path):
        raise UnsafePathError(f"whitespace or control characters in the path: {url!r}")
    parts = urlsplit(url)
    if parts.scheme or parts.netloc:
        raise UnsafePathError(f"an absolute URL is refused, pass a path: {url!r}")
    if ".." in path.split("/"):
        raise UnsafePathError(f"a '..' segment would leave the base URL: {url!r}")


def _check_base(base: str, *, allow_public: bool) -> None:
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"the API base URL must be http(s)://host...: {base!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"the API base URL has a query or fragment: {base!r}")
    if allow_public or _is_internal(parts.hostname):
        return
    raise ValueError(
        f"the API base URL {base!r} is not on loopback, a private network or an internal "
        "name; pass allow_public_base=True if it really is the app's own API"
    )


def _is_internal(host: str) -> bool:
    host = host.lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost" or "." not in host or host.endswith(_INTERNAL_SUFFIXES)
    return address.is_loopback or address.is_private
