"""A JSON Web Key Set fetched from an identity provider, cached and refreshed.

The set is fetched at start, again in the background once it is ``refresh_s`` old, and
on demand when a token names a kid the set lacks (key rotation). Fetches are single
flight and at most one starts per ``cooldown_s``, however many unknown kids arrive, so
tokens with made-up kids cannot make the server hammer the provider. A failed fetch
keeps the last good set and logs a warning. Keys the verifier cannot use (unknown type,
an ``alg`` or curve outside the configured algorithms, an RSA key under 2048 bits,
``"use": "enc"``, no kid, private or symmetric key material) are skipped and logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import httpx
from jwt import PyJWK
from jwt.algorithms import get_default_algorithms

__all__ = ["JwksClient", "VerifyingKey", "usable_algorithms"]

log = logging.getLogger("noa.auth")

# A key set larger than this is not a key set.
_MAX_BYTES = 1 << 20


class VerifyingKey(NamedTuple):
    """A public key (a ``cryptography`` object, or HMAC secret bytes) and the algorithms
    it may verify, pinned by config."""

    key: Any
    algorithms: tuple[str, ...]


def usable_algorithms(key: Any, algorithms: Iterable[str]) -> tuple[tuple[str, ...], str]:
    """The ``algorithms`` that can verify with ``key`` and accept its size, and why the
    others cannot (empty when all can)."""
    usable: list[str] = []
    reasons: list[str] = []
    implementations = get_default_algorithms()
    for name in algorithms:
        implementation = implementations.get(name)
        if implementation is None or name == "none":
            reasons.append(f"{name}: not a signature algorithm")
            continue
        try:
            prepared = implementation.prepare_key(key)
            too_short = implementation.check_key_length(prepared)
        except Exception as exc:
            reasons.append(f"{name}: {exc}")
            continue
        if too_short:
            reasons.append(f"{name}: {too_short}")
            continue
        usable.append(name)
    return tuple(usable), "; ".join(reasons)


class JwksClient:
    """The keys of the JWKS at ``url`` usable with ``algorithms``, by kid.

    ``on_change`` is called after a fetch that removed or replaced a key, so that tokens
    verified with the old key can be forgotten.
    """

    def __init__(
        self,
        url: str,
        algorithms: tuple[str, ...],
        *,
        refresh_s: float,
        cooldown_s: float,
        timeout_s: float,
        on_change: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.algorithms = algorithms
        self.refresh_s = refresh_s
        self.cooldown_s = cooldown_s
        self.timeout_s = timeout_s
        #: Fetches started (successful or not).
        self.fetches = 0
        self._on_change = on_change
        self._clock = clock
        self._keys: dict[str, VerifyingKey] = {}
        self._jwks: dict[str, dict[str, Any]] = {}  # kid -> the JWK as fetched
        self._loaded = False
        self._fetched_at = -float("inf")
        self._attempted_at = -float("inf")
        self._lock = asyncio.Lock()
        self._client: httpx.AsyncClient | None = None
        self._background: asyncio.Task[None] | None = None

    @property
    def loaded(self) -> bool:
        """Whether a fetch has ever succeeded."""
        return self._loaded

    async def start(self) -> None:
        """Open the HTTP client and fetch the set once (a failure is logged, not raised:
        the provider may come up later)."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_s), follow_redirects=False
            )
        await self.refresh()

    def get(self, kid: str) -> VerifyingKey | None:
        """The key named ``kid`` in the current set; starts a background refresh when the
        set is older than ``refresh_s``."""
        now = self._clock()
        if (
            now - self._fetched_at >= self.refresh_s
            and now - self._attempted_at >= self.cooldown_s
            and self._client is not None
            and (self._background is None or self._background.done())
        ):
            self._background = asyncio.get_running_loop().create_task(self.refresh())
        return self._keys.get(kid)

    async def refresh(self) -> None:
        """Fetch the set, unless a fetch started less than ``cooldown_s`` ago; callers
        arriving during a fetch wait for it instead of starting another."""
        async with self._lock:
            if self._clock() - self._attempted_at < self.cooldown_s:
                return
            self._attempted_at = self._clock()
            self.fetches += 1
            try:
                async with asyncio.timeout(self.timeout_s):
                    document = await self._download()
                jwks, keys = self._parse(document)
            except Exception as exc:
                log.warning(
                    "JWKS %s: fetch failed (%s: %s); keeping the last good set (%d keys)",
                    self.url,
                    type(exc).__name__,
                    exc,
                    len(self._keys),
                )
                return
            changed = any(jwks.get(kid) != jwk for kid, jwk in self._jwks.items())
            self._jwks, self._keys = jwks, keys
            self._loaded = True
            self._fetched_at = self._clock()
        if changed and self._on_change is not None:
            self._on_change()

    async def close(self) -> None:
        """Stop a background refresh and close the HTTP client. Calling it again does
        nothing."""
        if self._background is not None:
            self._background.cancel()
            await asyncio.gather(self._background, return_exceptions=True)
            self._background = None
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def _download(self) -> Any:
        if self._client is None:
            raise RuntimeError("the JWKS client is not started")
        body = bytearray()
        async with self._client.stream(
            "GET", self.url, headers={"accept": "application/json"}
        ) as response:
            response.raise_for_status()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > _MAX_BYTES:
                    raise ValueError(f"the key set is larger than {_MAX_BYTES} bytes")
        return json.loads(body)

    def _parse(self, document: Any) -> tuple[dict[str, dict[str, Any]], dict[str, VerifyingKey]]:
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise ValueError('not a JWK set (no "keys" list)')
        jwks: dict[str, dict[str, Any]] = {}
        keys: dict[str, VerifyingKey] = {}
        for entry in entries:
            named = entry.get("kid") if isinstance(entry, dict) else None
            kid = named if isinstance(named, str) else ""
            if not isinstance(entry, dict):
                found: VerifyingKey | str = "not a JSON object"
            elif not kid:
                found = "no kid"
            elif kid in keys:
                found = "a second key with this kid"
            else:
                found = self._key(entry)
            if isinstance(found, str):
                log.warning("JWKS %s: skipping key %r: %s", self.url, named, found)
                continue
            jwks[kid] = entry
            keys[kid] = found
        if not keys:
            raise ValueError(f"no usable key for algorithms {list(self.algorithms)}")
        return jwks, keys

    def _key(self, entry: dict[str, Any]) -> VerifyingKey | str:
        """The verifying key of one JWK, or why it cannot be used."""
        if "d" in entry or entry.get("kty") == "oct":
            return "a private or symmetric key (a key set publishes public keys)"
        if entry.get("use", "sig") != "sig":
            return f"use is {entry.get('use')!r}, not 'sig'"
        try:
            parsed = PyJWK(entry)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        declared = entry.get("alg")
        usable, why = usable_algorithms(
            parsed.key, [a for a in self.algorithms if declared in (None, a)]
        )
        if usable:
            return VerifyingKey(parsed.key, usable)
        return why or f"alg {declared!r} is not among {list(self.algorithms)}"
