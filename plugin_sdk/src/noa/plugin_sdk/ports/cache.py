"""The ``cache`` driver slot: a byte-valued key/value cache with optional expiry.

Drivers (``memory``, ``redis``) register in the entry-point group ``noa.drivers.cache``.
Values are bytes so the port never guesses at serialisation; the plugin that caches
something owns its encoding (msgspec is the usual choice).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

__all__ = ["CACHE_STATE_KEY", "CachePort", "TieredCachePort"]

#: The ``host.state`` key under which the cache plugin offers its :class:`TieredCachePort`.
CACHE_STATE_KEY = "noa.cache"


@runtime_checkable
class CachePort(Protocol):
    """A cache of bytes by string key.

    A cache may forget any entry at any time (eviction), so a miss is never an error.
    ``ttl_s`` is in seconds and must be positive; ``None`` means the entry lives until
    evicted. A driver whose engine counts whole milliseconds rounds a ttl up, never to 0.
    A driver shared between processes (Redis) keeps its keys under its own prefix, so
    :meth:`clear` empties only this cache.
    """

    async def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or ``None`` when missing or expired.

        ``b""`` is a value like any other and is returned as ``b""``.
        """
        ...

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        """Store ``value``, replacing any previous value and its ttl.

        Raises ``ValueError`` for a ttl that is not positive.
        """
        ...

    async def delete(self, key: str) -> bool:
        """Forget ``key``; ``True`` if a live entry was removed."""
        ...

    async def clear(self) -> None:
        """Forget every entry of this cache."""
        ...

    async def ping(self) -> bool:
        """``True`` when the cache answers (the readiness check)."""
        ...

    async def close(self) -> None:
        """Release connections. Calling it again does nothing."""
        ...


class TieredCachePort(Protocol):
    """The cache other plugins use (``host.state[CACHE_STATE_KEY]`` once the cache plugin
    has started): this worker's memory, then the shared cache the config chose, then,
    for entries stored ``durable=True``, the database.

    A failure of the shared tier is never the caller's: it falls back to memory. A
    durable write goes to the database first and fails if that fails.
    """

    async def get(self, key: str, *, durable: bool = False) -> bytes | None:
        """The value, or ``None`` when no tier has it (the database is asked only with
        ``durable=True``)."""
        ...

    async def set(
        self, key: str, value: bytes, ttl_s: float | None = None, *, durable: bool = False
    ) -> None:
        """Store in every tier; ``None`` means the configured default ttl;
        ``durable=True`` also keeps it in the database, across restarts."""
        ...

    async def invalidate(self, key: str) -> None:
        """Remove from every tier."""
        ...

    async def get_or_compute(
        self,
        key: str,
        compute: Callable[[], Awaitable[bytes]],
        ttl_s: float | None = None,
        *,
        durable: bool = False,
    ) -> bytes:
        """The cached value, or ``compute()``'s, stored; concurrent callers for one key in
        one worker share one computation."""
        ...
