"""Verifying what the gateway proved: the `x-fluxlit-identity` assertion.

On every request that passed a route's `auth`, the gateway sends the upstream a
short-lived JWT it signed itself (EdDSA or ES256): `iss` is its `public_base_url`,
`aud` the upstream's name in `fluxlit.toml`, `sub` the user, `scope` the scopes,
the configured claims, and `jti` the request id. Its public keys are at
`/.well-known/fluxlit/jwks.json`. Plain `x-fluxlit-sub` headers are only a
convenience: anyone who reaches the app without the gateway can send them. The
assertion cannot be forged without the gateway's key, and names the upstream it was
meant for, so an assertion for one upstream is refused by another.

This module is framework-free: `fluxlit_gateway.fastapi` and
`fluxlit_gateway.streamlit` build on it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Protocol

import httpx
import jwt

from fluxlit_gateway import _env

__all__ = ["Identity", "IdentityError", "IdentityVerifier", "JwksCache", "KeySource"]

log = logging.getLogger("fluxlit_gateway")

# The algorithms the gateway signs with; anything else (HS256 with the public key as
# the secret, `none`) is refused before a key is looked at.
ALGORITHMS = ("EdDSA", "ES256")
# The claims every assertion carries.
REQUIRED_CLAIMS = ["iss", "aud", "sub", "iat", "exp"]
# Without Cache-Control, the keys are kept this long (the gateway sends max-age=300).
DEFAULT_MAX_AGE = 300.0
# An unknown `kid` refetches the keys at most this often: a flood of tokens with made-up
# key ids must not become a flood of fetches.
DEFAULT_REFETCH_COOLDOWN = 10.0
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*(\d+)", re.IGNORECASE)


class IdentityError(Exception):
    """The assertion is missing or does not verify; the message says why."""


@dataclass(frozen=True)
class Identity:
    """Who the gateway verified, from a checked assertion.

    `sub` is the user (the subject of the token or session the gateway checked),
    `scopes` the scopes it carried, `claims` every claim of the assertion (the copied
    claims such as `email` included), `request_id` the id of the request the assertion
    was signed for, and `expires_at` when the assertion stops being valid.
    """

    sub: str
    scopes: frozenset[str]
    claims: Mapping[str, Any] = field(repr=False)
    request_id: str | None
    expires_at: datetime

    def has_scopes(self, *scopes: str) -> bool:
        """Whether every one of `scopes` was granted."""
        return self.scopes.issuperset(scopes)

    def get(self, claim: str, default: Any = None) -> Any:
        """A claim of the assertion (`email`, `name`, ...), or `default`."""
        return self.claims.get(claim, default)

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Identity:
        """The identity stated by verified claims."""
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise IdentityError("the assertion has no subject")
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise IdentityError("the assertion's scope is not a string")
        jti = claims.get("jti")
        return cls(
            sub=sub,
            scopes=frozenset(scope.split()),
            claims=MappingProxyType(dict(claims)),
            request_id=jti if isinstance(jti, str) else None,
            expires_at=datetime.fromtimestamp(int(claims["exp"]), tz=timezone.utc),
        )


class KeySource(Protocol):
    """Where a verifier finds the gateway's public keys by key id (`JwksCache`, or a
    fixed set in tests)."""

    def key(self, kid: str) -> jwt.PyJWK: ...

    async def key_async(self, kid: str) -> jwt.PyJWK: ...


@dataclass
class _KeySet:
    keys: Mapping[str, jwt.PyJWK]
    fresh_until: float
    fetched_at: float


class JwksCache:
    """The gateway's public keys, fetched once and kept per the answer's Cache-Control.

    A key id it does not know refetches the set (the gateway rotated its key), at most
    once per `refetch_cooldown` seconds. One fetch runs at a time: callers that miss
    together wait for it instead of fetching too. When a refetch of stale keys fails,
    the keys already known are used and a warning is logged; with no keys at all,
    verification fails.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        refetch_cooldown: float = DEFAULT_REFETCH_COOLDOWN,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the JWKS URL must be http(s)://...: {url!r}")
        self.url = url
        self._timeout = timeout
        self._cooldown = refetch_cooldown
        self._set: _KeySet | None = None
        self._thread_lock = threading.Lock()
        self._async_lock: asyncio.Lock | None = None
        self.fetches = 0

    def key(self, kid: str) -> jwt.PyJWK:
        """The key `kid`, fetching the set when needed (blocking)."""
        found = self._lookup(kid)
        if found is not None:
            return found
        with self._thread_lock:
            found = self._lookup(kid)
            if found is not None:
                return found
            if self._may_fetch(kid):
                self._store(self._fetch_sync())
        return self._known(kid)

    async def key_async(self, kid: str) -> jwt.PyJWK:
        """The key `kid`, fetching the set when needed, without blocking the event loop."""
        found = self._lookup(kid)
        if found is not None:
            return found
        if self._async_lock is None:
            self._async_lock = asyncio.Lock()
        async with self._async_lock:
            found = self._lookup(kid)
            if found is not None:
                return found
            if self._may_fetch(kid):
                self._store(await self._fetch_async())
        return self._known(kid)

    def _lookup(self, kid: str) -> jwt.PyJWK | None:
        current = self._set
        if current is None or time.monotonic() >= current.fresh_until:
            return None
        return current.keys.get(kid)

    def _may_fetch(self, kid: str) -> bool:
        current = self._set
        if current is None or time.monotonic() >= current.fresh_until:
            return True
        # Fresh keys without this kid: a rotation, or a made-up kid.
        return time.monotonic() - current.fetched_at >= self._cooldown

    def _known(self, kid: str) -> jwt.PyJWK:
        current = self._set
        if current is None:
            raise IdentityError(f"the gateway's keys could not be fetched from {self.url}")
        key = current.keys.get(kid)
        if key is None:
            raise IdentityError(f"no key {kid!r} at {self.url}")
        return key

    def _store(self, fetched: _KeySet | Exception) -> None:
        if isinstance(fetched, _KeySet):
            self._set = fetched
            return
        if self._set is None:
            log.error("cannot fetch the gateway's keys from %s: %s", self.url, fetched)
            return
        log.warning(
            "cannot refetch the gateway's keys from %s, using the %d known: %s",
            self.url,
            len(self._set.keys),
            fetched,
        )
        # Try again after the cooldown, not on every request.
        self._set.fetched_at = time.monotonic()
        self._set.fresh_until = max(self._set.fresh_until, time.monotonic() + self._cooldown)

    def _fetch_sync(self) -> _KeySet | Exception:
        self.fetches += 1
        try:
            with httpx.Client(timeout=self._timeout, trust_env=False) as client:
                response = client.get(self.url)
            return self._parse(response)
        except (httpx.HTTPError, ValueError) as error:
            return error

    async def _fetch_async(self) -> _KeySet | Exception:
        self.fetches += 1
        try:
            async with httpx.AsyncClient(timeout=self._timeout, trust_env=False) as client:
                response = await client.get(self.url)
            return self._parse(response)
        except (httpx.HTTPError, ValueError) as error:
            return error

    def _parse(self, response: httpx.Response) -> _KeySet:
        if response.status_code != 200:
            raise ValueError(f"{self.url} answered {response.status_code}")
        document = response.json()
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise ValueError(f"{self.url} is not a JWK set")
        keys: dict[str, jwt.PyJWK] = {}
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
                continue
            if entry.get("alg") not in ALGORITHMS:
                continue
            try:
                keys[entry["kid"]] = jwt.PyJWK(entry)
            except jwt.PyJWTError as error:
                log.warning("skipping key %r of %s: %s", entry["kid"], self.url, error)
        now = time.monotonic()
        return _KeySet(keys=keys, fresh_until=now + _max_age(response), fetched_at=now)


def _max_age(response: httpx.Response) -> float:
    cache_control = response.headers.get("cache-control", "")
    if "no-store" in cache_control.lower() or "no-cache" in cache_control.lower():
        return 0.0
    found = _MAX_AGE.search(cache_control)
    return float(found.group(1)) if found else DEFAULT_MAX_AGE


class IdentityVerifier:
    """Checks assertions for one upstream: signature, `iss`, `aud` and `exp`.

    Each argument defaults from the environment:

    - `jwks_url`: `FLUXLIT_GATEWAY_JWKS_URL`, else `/.well-known/fluxlit/jwks.json` at
      `FLUXLIT_GATEWAY_URL` (the gateway as this server reaches it, e.g.
      `http://127.0.0.1:8080`);
    - `issuer`: `FLUXLIT_GATEWAY_ISSUER`, else `FLUXLIT_GATEWAY_URL` (the gateway's
      `public_base_url`, without a trailing `/`);
    - `audience`: `FLUXLIT_UPSTREAM_NAME`, this upstream's name in `fluxlit.toml`.

    A missing one raises `ValueError` at once, not at the first request.
    """

    def __init__(
        self,
        *,
        jwks_url: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway: float = 5.0,
        jwks: KeySource | None = None,
    ) -> None:
        self.issuer = (issuer or _env.issuer()).rstrip("/")
        self.audience = audience or _env.required(_env.UPSTREAM_NAME, "the upstream's name")
        self.jwks: KeySource = jwks or JwksCache(jwks_url or _env.jwks_url())
        self.leeway = leeway

    def verify(self, token: str) -> Identity:
        """The identity `token` asserts, or `IdentityError` (blocking on a key fetch)."""
        kid = self._kid(token)
        return self._decode(token, self.jwks.key(kid))

    async def verify_async(self, token: str) -> Identity:
        """As `verify`, for async code."""
        kid = self._kid(token)
        return self._decode(token, await self.jwks.key_async(kid))

    @staticmethod
    def _kid(token: str) -> str:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise IdentityError(f"the assertion is not a JWT: {error}") from None
        if header.get("alg") not in ALGORITHMS:
            raise IdentityError(f"the assertion's algorithm {header.get('alg')!r} is refused")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise IdentityError("the assertion names no key")
        return kid

    def _decode(self, token: str, key: jwt.PyJWK) -> Identity:
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError as error:
            raise IdentityError(f"the assertion is refused: {error}") from None
        return Identity.from_claims(claims)
