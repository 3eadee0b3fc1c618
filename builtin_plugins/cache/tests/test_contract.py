"""Both cache drivers pass the SDK's cache contract; the plugin passes the plugin contract."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import ClassVar

import pytest
from noa.builtin_plugins.cache.drivers import MemoryDriver
from noa.builtin_plugins.cache.redis_driver import RedisCache
from noa.plugin_sdk.ports.cache import CachePort
from noa.plugin_sdk.testing.contracts import CacheContract, PluginContract


class TestMemoryDriver(CacheContract):
    async def make_driver(self) -> CachePort:
        return MemoryDriver(1_000)


@pytest.mark.redis
class TestRedisDriver(CacheContract):
    prefixes: ClassVar[list[str]] = []

    @pytest.fixture(autouse=True)
    async def _remove_test_keys(self) -> AsyncIterator[None]:
        yield
        while self.prefixes:
            cleaner = RedisCache("redis://127.0.0.1:6379/0", prefix=self.prefixes.pop())
            await cleaner.clear()
            await cleaner.close()

    async def make_driver(self) -> CachePort:
        prefix = f"noa-test-{uuid.uuid4().hex}:"
        self.prefixes.append(prefix)
        return RedisCache("redis://127.0.0.1:6379/0", prefix=prefix)


@pytest.mark.redis
async def test_clear_leaves_other_prefixes_alone() -> None:
    mine = RedisCache("redis://127.0.0.1:6379/0", prefix=f"noa-test-{uuid.uuid4().hex}*[x]:")
    other = RedisCache("redis://127.0.0.1:6379/0", prefix=f"noa-test-{uuid.uuid4().hex}:")
    try:
        await mine.set("k", b"1")
        await other.set("k", b"2")
        await mine.clear()
        assert await mine.get("k") is None
        assert await other.get("k") == b"2"
    finally:
        await other.clear()
        await mine.close()
        await other.close()


class TestCachePluginContract(PluginContract):
    plugin = "cache"
