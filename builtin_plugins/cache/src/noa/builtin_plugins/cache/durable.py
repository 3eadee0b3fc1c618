"""The durable tier of the tiered cache: entries kept in the database (``noa_cache_entry``)
so they survive restarts of every worker and of Redis.

Expiry is wall-clock time (``time.time``) because it must mean the same thing after a
restart; an expired row is ignored, removed when read, and purged at start-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from noa.plugin_sdk.ports.storage import StoragePort

__all__ = ["DurableTier"]


class DurableTier:
    def __init__(self, storage: StoragePort, *, clock: Callable[[], float] = time.time) -> None:
        self._storage = storage
        self._clock = clock

    async def get(self, key: str) -> tuple[bytes, float] | None:
        """The value and its remaining seconds, or ``None``."""
        row = await self._storage.fetch_one(
            "SELECT value, expires_at FROM noa_cache_entry WHERE key = $1", key
        )
        if row is None:
            return None
        remaining = float(row["expires_at"]) - self._clock()
        if remaining <= 0:
            await self.delete(key)
            return None
        return bytes(row["value"]), remaining

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._storage.execute(
            "INSERT INTO noa_cache_entry (key, value, expires_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
            "expires_at = excluded.expires_at",
            key,
            bytes(value),
            self._clock() + ttl_s,
        )

    async def delete(self, key: str) -> None:
        await self._storage.execute("DELETE FROM noa_cache_entry WHERE key = $1", key)

    async def purge_expired(self) -> int:
        return await self._storage.execute(
            "DELETE FROM noa_cache_entry WHERE expires_at <= $1", self._clock()
        )
