"""The contract every ``noa.drivers.cache`` driver passes.

Subclass :class:`CacheContract` in a test module named ``test_*.py``, in a class named
``Test*``, and implement :meth:`~CacheContract.make_driver`::

    class TestRedisCache(CacheContract):
        async def make_driver(self) -> CachePort:
            return RedisCache(url=..., prefix=f"test-{uuid.uuid4().hex}:")
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator

import pytest
from noa.plugin_sdk.ports.cache import CachePort

__all__ = ["CacheContract"]


class CacheContract(abc.ABC):
    """Behaviour shared by every cache driver. Expiry tests sleep a few tenths of a second."""

    # Long enough for a networked cache to see an entry before it expires.
    ttl_s = 0.2

    @abc.abstractmethod
    async def make_driver(self) -> CachePort:
        """A new, empty cache of the driver under test (on a shared server: its own prefix)."""

    @pytest.fixture
    async def driver(self) -> AsyncIterator[CachePort]:
        cache = await self.make_driver()
        try:
            yield cache
        finally:
            await cache.close()

    async def test_satisfies_the_port(self, driver: CachePort) -> None:
        assert isinstance(driver, CachePort)

    async def test_missing_key_is_none(self, driver: CachePort) -> None:
        assert await driver.get("never-set") is None

    async def test_round_trip(self, driver: CachePort) -> None:
        await driver.set("greeting", b"hello")
        await driver.set("other", b"world")
        assert await driver.get("greeting") == b"hello"
        assert await driver.get("other") == b"world"

    async def test_set_replaces_the_value(self, driver: CachePort) -> None:
        await driver.set("k", b"first")
        await driver.set("k", b"second")
        assert await driver.get("k") == b"second"

    async def test_empty_and_binary_values_round_trip(self, driver: CachePort) -> None:
        everything = bytes(range(256)) * 4
        await driver.set("empty", b"")
        await driver.set("binary", everything)
        assert await driver.get("empty") == b""
        assert await driver.get("binary") == everything

    async def test_keys_may_hold_any_text(self, driver: CachePort) -> None:
        key = "user:42/profile ünïcode * ?"
        await driver.set(key, b"v")
        assert await driver.get(key) == b"v"

    async def test_delete_says_whether_it_removed(self, driver: CachePort) -> None:
        await driver.set("k", b"v")
        assert await driver.delete("k") is True
        assert await driver.get("k") is None
        assert await driver.delete("k") is False
        assert await driver.delete("never-set") is False

    async def test_entry_expires_after_its_ttl(self, driver: CachePort) -> None:
        await driver.set("short", b"v", ttl_s=self.ttl_s)
        await driver.set("long", b"v")
        assert await driver.get("short") == b"v"
        await asyncio.sleep(self.ttl_s * 2.5)
        assert await driver.get("short") is None
        assert await driver.delete("short") is False
        assert await driver.get("long") == b"v"

    async def test_set_without_ttl_drops_the_old_ttl(self, driver: CachePort) -> None:
        await driver.set("k", b"v1", ttl_s=self.ttl_s)
        await driver.set("k", b"v2")
        await asyncio.sleep(self.ttl_s * 2.5)
        assert await driver.get("k") == b"v2"

    async def test_set_with_ttl_replaces_no_ttl(self, driver: CachePort) -> None:
        await driver.set("k", b"v1")
        await driver.set("k", b"v2", ttl_s=self.ttl_s)
        await asyncio.sleep(self.ttl_s * 2.5)
        assert await driver.get("k") is None

    @pytest.mark.parametrize("ttl_s", [0, 0.0, -1.0])
    async def test_ttl_must_be_positive(self, driver: CachePort, ttl_s: float) -> None:
        with pytest.raises(ValueError, match="ttl"):
            await driver.set("k", b"v", ttl_s=ttl_s)
        assert await driver.get("k") is None

    async def test_clear_forgets_everything(self, driver: CachePort) -> None:
        for index in range(10):
            await driver.set(f"k{index}", b"v", ttl_s=None if index % 2 else 60.0)
        await driver.clear()
        for index in range(10):
            assert await driver.get(f"k{index}") is None
        await driver.set("after", b"v")
        assert await driver.get("after") == b"v"

    async def test_ping(self, driver: CachePort) -> None:
        assert await driver.ping() is True

    async def test_close_twice_is_harmless(self) -> None:
        cache = await self.make_driver()
        await cache.set("k", b"v")
        await cache.close()
        await cache.close()
