"""The ``redis`` driver of the cache slot, on redis.asyncio with a bounded connection pool.

Keys are stored under ``prefix`` so that :meth:`RedisCache.clear` empties only this
cache. Every command is bounded by ``timeout_s``; a Redis that does not answer raises
``redis.exceptions.RedisError`` quickly instead of holding requests, and the tiered
cache then falls back to memory.
"""

from __future__ import annotations

import math
import re

from noa.builtin_plugins.cache.config import CacheConfig
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["RedisCache"]

_GLOB = re.compile(r"([*?\[\]\\])")


class RedisCache:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "noa:cache:",
        pool_size: int = 32,
        timeout_s: float = 0.5,
    ) -> None:
        self._prefix = prefix
        # A blocking pool waits (up to timeout_s) for a free connection instead of
        # failing at once when every connection is busy.
        self._pool = BlockingConnectionPool.from_url(
            url,
            max_connections=pool_size,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            # After a Redis restart every pooled connection is dead; without one retry
            # on a fresh connection, the first command on each of them would fail.
            retry=Retry(NoBackoff(), retries=1),
            retry_on_error=[RedisConnectionError],
        )
        self._client = Redis(connection_pool=self._pool)
        self._closed = False

    @classmethod
    def from_config(cls, config: CacheConfig) -> RedisCache:
        return cls(
            config.redis_url.reveal(),
            prefix=config.redis_prefix,
            pool_size=config.redis_pool_size,
            timeout_s=config.redis_timeout_s,
        )

    async def get(self, key: str) -> bytes | None:
        value = await self._client.get(self._prefix + key)
        return None if value is None else bytes(value)

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        if ttl_s is not None and not ttl_s > 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        # Redis counts whole milliseconds: round up so a short ttl never becomes 0.
        px = None if ttl_s is None else max(1, math.ceil(ttl_s * 1000))
        await self._client.set(self._prefix + key, bytes(value), px=px)

    async def delete(self, key: str) -> bool:
        return bool(await self._client.delete(self._prefix + key))

    async def clear(self) -> None:
        pattern = _GLOB.sub(r"\\\1", self._prefix) + "*"
        batch: list[bytes] = []
        async for key in self._client.scan_iter(match=pattern, count=500):
            batch.append(key)
            if len(batch) >= 500:
                await self._client.unlink(*batch)
                batch.clear()
        if batch:
            await self._client.unlink(*batch)

    async def ping(self) -> bool:
        return bool(await self._client.ping())

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._client.aclose()
            await self._pool.disconnect()
