"""The tiered cache: tiers, single flight, metrics, and Redis going away and coming back."""

from __future__ import annotations

import asyncio
import types
import uuid
from typing import Any

import pytest
from litestar import get
from litestar.params import FromPath
from noa.builtin_plugins.cache.redis_driver import RedisCache
from noa.builtin_plugins.cache.tiered import TieredCache
from noa.plugin_sdk import Registry, RouteGroup, hookimpl
from noa.plugin_sdk.memory_cache import MemoryCache
from noa.plugin_sdk.ports.cache import CACHE_STATE_KEY
from redis.asyncio import Redis

SHARED_URL = "redis://127.0.0.1:6379/0"


def memory_only() -> TieredCache:
    return TieredCache(MemoryCache(100), default_ttl_s=60)


async def test_memory_only_set_get_invalidate_and_default_ttl() -> None:
    now = [0.0]
    cache = TieredCache(MemoryCache(100, clock=lambda: now[0]), default_ttl_s=10)
    await cache.set("a", b"1")
    assert await cache.get("a") == b"1"
    now[0] = 9.9
    assert await cache.get("a") == b"1"
    now[0] = 10.1
    assert await cache.get("a") is None
    await cache.set("b", b"2", ttl_s=100)
    await cache.invalidate("b")
    assert await cache.get("b") is None
    with pytest.raises(ValueError, match="positive"):
        await cache.set("c", b"3", ttl_s=0)


async def test_concurrent_misses_compute_once() -> None:
    cache = memory_only()
    calls = 0

    async def compute() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return b"expensive"

    results = await asyncio.gather(*(cache.get_or_compute("k", compute) for _ in range(50)))
    assert results == [b"expensive"] * 50
    assert calls == 1
    assert await cache.get_or_compute("k", compute) == b"expensive"
    assert calls == 1


async def test_a_failed_computation_reaches_every_waiter_and_is_not_cached() -> None:
    cache = memory_only()
    calls = 0

    async def compute() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.02)
        raise LookupError("backend said no")

    outcomes = await asyncio.gather(
        *(cache.get_or_compute("k", compute) for _ in range(10)), return_exceptions=True
    )
    assert calls == 1
    assert all(isinstance(o, LookupError) for o in outcomes)
    with pytest.raises(LookupError):
        await cache.get_or_compute("k", compute)
    assert calls == 2


async def test_waiters_recompute_when_the_computing_caller_is_cancelled() -> None:
    cache = memory_only()
    started = asyncio.Event()
    calls = 0

    async def slow() -> bytes:
        nonlocal calls
        calls += 1
        started.set()
        await asyncio.sleep(10)
        return b"never"

    async def quick() -> bytes:
        nonlocal calls
        calls += 1
        return b"second try"

    leader = asyncio.create_task(cache.get_or_compute("k", slow))
    await started.wait()
    waiter = asyncio.create_task(cache.get_or_compute("k", quick))
    await asyncio.sleep(0.01)
    leader.cancel()
    assert await asyncio.wait_for(waiter, 2) == b"second try"
    assert calls == 2


@pytest.mark.redis
async def test_workers_share_entries_through_redis() -> None:
    prefix = f"noa-test-{uuid.uuid4().hex}:"
    one = TieredCache(MemoryCache(100), RedisCache(SHARED_URL, prefix=prefix), local_ttl_s=0.2)
    two = TieredCache(MemoryCache(100), RedisCache(SHARED_URL, prefix=prefix), local_ttl_s=0.2)
    try:
        await one.set("user:1", b"ada", ttl_s=30)
        assert await two.get("user:1") == b"ada"  # from Redis, then kept in two's memory
        await one.invalidate("user:1")
        assert await one.get("user:1") is None
        await asyncio.sleep(0.25)  # two's memory copy lives at most local_ttl_s
        assert await two.get("user:1") is None
    finally:
        await one.close()
        await two.close()


async def test_redis_stopped_falls_back_to_memory_then_is_used_again(private_redis: Any) -> None:
    shared = RedisCache(private_redis.url, prefix="t:", timeout_s=0.2)
    cache = TieredCache(MemoryCache(100), shared, retry_s=0.3, local_ttl_s=60)
    direct = Redis.from_url(private_redis.url)
    try:
        await cache.set("before", b"1")
        assert await direct.get("t:before") == b"1"
        assert (await cache.health()).status == "ok"

        private_redis.stop()
        # No error for the caller, and no hang: every call is bounded by the timeout.
        await asyncio.wait_for(cache.set("during", b"2"), 10)
        assert await asyncio.wait_for(cache.get("during"), 10) == b"2"  # from memory
        assert await asyncio.wait_for(cache.get("before"), 10) == b"1"
        assert await asyncio.wait_for(cache.get("missing"), 10) is None
        health = await cache.health()
        assert health.status == "degraded"
        assert "redis unreachable" in health.detail

        private_redis.start()
        await asyncio.sleep(0.35)  # past retry_s, Redis is tried again
        await cache.set("after", b"3")  # the pool's dead connections are replaced
        assert (await cache.health()).status == "ok"
        await direct.aclose()
        direct = Redis.from_url(private_redis.url)
        assert await direct.get("t:after") == b"3"
    finally:
        await direct.aclose()
        await cache.close()


def cached_plugin() -> types.ModuleType:
    """A plugin reading through the tiered cache, as a feature plugin would."""
    module = types.ModuleType("cached")
    state: dict[str, Any] = {"computed": 0}

    @hookimpl
    def noa_register_routes(routes: Registry[RouteGroup], host: Any) -> None:
        @get("/v1/square/{n:int}")
        async def square(n: FromPath[int]) -> dict[str, int]:
            async def compute() -> bytes:
                state["computed"] += 1
                return str(n * n).encode()

            value = await host.state[CACHE_STATE_KEY].get_or_compute(f"square:{n}", compute)
            return {"n": n, "square": int(value), "computed": state["computed"]}

        routes.add("square", RouteGroup(handlers=(square,)))

    module.noa_register_routes = noa_register_routes  # type: ignore[attr-defined]
    return module


def sample(text: str, name: str, tier: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{name}{{tier="{tier}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_served_cache_counts_hits_and_misses_by_tier(noa_boot: Any) -> None:
    async with noa_boot(
        ["http", "observability", "cache"], extra_plugins={"cached": cached_plugin()}
    ) as noa:
        first = (await noa.client.get("/v1/square/7")).json()
        second = (await noa.client.get("/v1/square/7")).json()
        assert (first["square"], first["computed"]) == (49, 1)
        assert second["computed"] == 1
        text = (await noa.client.get("/metrics")).text
    assert sample(text, "cache_hits_total", "memory") == 1
    assert sample(text, "cache_misses_total", "memory") == 1


async def test_ready_follows_redis_degraded_or_required(noa_boot: Any, private_redis: Any) -> None:
    base = {"drivers": {"cache": "redis"}}
    for required, down_status in ((False, 200), (True, 503)):
        config = {
            **base,
            "cache": {
                "redis_url": private_redis.url,
                "redis_required": required,
                "redis_timeout_s": 0.2,
                "redis_retry_s": 0.2,
            },
        }
        async with noa_boot(["http", "cache"], config=config) as noa:
            assert (await noa.client.get("/ready")).json()["status"] == "ready"
            private_redis.stop()
            try:
                down = await noa.client.get("/ready")
                assert down.status_code == down_status
                (component,) = down.json()["components"]
                assert component["status"] == ("failing" if required else "degraded")
                assert down.json()["status"] == ("not_ready" if required else "degraded")
            finally:
                private_redis.start()
            await asyncio.sleep(0.25)
            assert (await noa.client.get("/ready")).json()["status"] == "ready"


async def test_malformed_redis_url_names_the_key(noa_boot: Any) -> None:
    from noa.plugin_sdk import PluginStartError

    config = {"drivers": {"cache": "redis"}, "cache": {"redis_url": "mysql://db"}}
    with pytest.raises(PluginStartError, match=r"cache\.redis_url"):
        async with noa_boot(["http", "cache"], config=config):
            pass
