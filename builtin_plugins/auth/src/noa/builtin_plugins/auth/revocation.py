"""The list of revoked token ids (JWT ``jti``), shared by every worker through the cache.

A revocation is stored as ``auth:revoked:<jti>`` in the tiered cache with
``durable=True``, so it survives Redis evictions and restarts (the database keeps it),
and it expires with the token it revokes. Each worker remembers a "not revoked" answer
for a jti at most ``check_interval_s``: a token used without pause costs about
``1 / check_interval_s`` cache reads a second per worker, and a revocation reaches every
worker within ``check_interval_s``. A "revoked" answer is remembered until the token
expires. Concurrent checks of one jti in one worker share one cache read.

A token without a ``jti`` cannot be revoked this way; such tokens stay valid until they
expire (issue short-lived ones, or rotate the signing key).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from noa.plugin_sdk.errors import ServiceUnavailable
from noa.plugin_sdk.ports.cache import TieredCachePort

__all__ = ["REVOKED_PREFIX", "RevocationList"]

log = logging.getLogger("noa.auth")

#: The cache key prefix of a revoked jti.
REVOKED_PREFIX = "auth:revoked:"
# How often at most a failing cache is logged, in seconds: a database outage must not
# write one line per request.
_LOG_EVERY_S = 10.0


class RevocationList:
    """Revoked jtis in ``cache`` (the tiered cache), with a bounded per-worker memory.

    ``leeway_s`` keeps a revocation that much past the token's expiry (the clock skew the
    verifier allows); ``max_entries`` bounds the answers remembered in this worker (the
    oldest is forgotten first). ``clock`` is monotonic, ``wall_clock`` the epoch clock
    token expiries are written in.
    """

    __slots__ = (
        "_cache",
        "_check_interval_s",
        "_clock",
        "_inflight",
        "_known",
        "_leeway_s",
        "_logged_at",
        "_max_entries",
        "_wall_clock",
    )

    def __init__(
        self,
        cache: TieredCachePort,
        check_interval_s: float,
        *,
        leeway_s: float = 0.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not check_interval_s > 0:
            raise ValueError(f"check_interval_s must be positive, got {check_interval_s}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self._cache = cache
        self._check_interval_s = check_interval_s
        self._leeway_s = leeway_s
        self._max_entries = max_entries
        self._clock = clock
        self._wall_clock = wall_clock
        # jti -> (revoked, monotonic time until which the answer holds); insertion order
        # is the eviction order.
        self._known: dict[str, tuple[bool, float]] = {}
        self._inflight: dict[str, asyncio.Task[bool]] = {}
        self._logged_at = -_LOG_EVERY_S

    async def revoke(self, jti: str, expires_at: float) -> None:
        """Revoke ``jti`` on every worker until ``expires_at`` (epoch seconds, the token's
        ``exp``) plus the leeway. A token already past that needs nothing stored.

        Raises ``ServiceUnavailable`` when the revocation cannot be stored durably.
        """
        if not jti:
            raise ValueError("jti must not be empty")
        ttl_s = expires_at + self._leeway_s - self._wall_clock()
        if ttl_s <= 0:
            return
        try:
            await self._cache.set(
                REVOKED_PREFIX + jti, repr(float(expires_at)).encode(), ttl_s, durable=True
            )
        except Exception as exc:
            log.warning("cannot store the revocation of jti %r: %s: %s", jti, _name(exc), exc)
            raise ServiceUnavailable(
                "the token revocation list cannot be written", code="revocation_unavailable"
            ) from exc
        self._remember(jti, True, self._clock() + ttl_s)

    async def is_revoked(self, jti: str) -> bool:
        """Whether ``jti`` is revoked, as of at most ``check_interval_s`` ago.

        Raises ``ServiceUnavailable`` when the cache cannot answer (fails closed).
        """
        known = self._known.get(jti)
        if known is not None and known[1] > self._clock():
            return known[0]
        task = self._inflight.get(jti)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._read(jti))
            self._inflight[jti] = task
            task.add_done_callback(lambda done: self._settled(jti, done))
        # A caller that is cancelled must not cancel the read the others wait for.
        return await asyncio.shield(task)

    def __len__(self) -> int:
        """Answers remembered in this worker (expired ones not yet dropped included)."""
        return len(self._known)

    async def _read(self, jti: str) -> bool:
        try:
            value = await self._cache.get(REVOKED_PREFIX + jti, durable=True)
        except Exception as exc:
            now = self._clock()
            if now - self._logged_at >= _LOG_EVERY_S:
                self._logged_at = now
                log.warning("the token revocation list cannot be read: %s: %s", _name(exc), exc)
            raise ServiceUnavailable(
                "the token revocation list cannot be read", code="revocation_unavailable"
            ) from exc
        now = self._clock()
        if value is None:
            self._remember(jti, False, now + self._check_interval_s)
            return False
        try:
            remaining = float(value) + self._leeway_s - self._wall_clock()
        except ValueError:
            remaining = self._check_interval_s  # not ours to parse: revoked, ask again soon
        self._remember(jti, True, now + max(remaining, self._check_interval_s))
        return True

    def _settled(self, jti: str, task: asyncio.Task[bool]) -> None:
        if self._inflight.get(jti) is task:
            del self._inflight[jti]
        if not task.cancelled():
            task.exception()  # retrieved: the waiters have it, or there were none

    def _remember(self, jti: str, revoked: bool, until: float) -> None:
        self._known.pop(jti, None)
        while len(self._known) >= self._max_entries:
            del self._known[next(iter(self._known))]
        self._known[jti] = (revoked, until)


def _name(exc: BaseException) -> str:
    return type(exc).__name__
