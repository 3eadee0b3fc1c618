"""Durable cache entries: kept in the database (SQLite here, PostgreSQL when marked),
they survive a restart of every other tier."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from noa.builtin_plugins.cache.durable import DurableTier
from noa.builtin_plugins.cache.tiered import TieredCache
from noa.builtin_plugins.storage.config import StorageConfig
from noa.builtin_plugins.storage.migrate import Migrator, make_engine
from noa.builtin_plugins.storage.postgres_driver import PostgresStorage
from noa.builtin_plugins.storage.sqlite_driver import SqliteDriver
from noa.plugin_sdk import Secret
from noa.plugin_sdk.memory_cache import MemoryCache
from noa.plugin_sdk.ports.cache import CACHE_STATE_KEY

CACHE_APP = {"cache": "noa.builtin_plugins.cache.piccolo_app"}


async def migrated_sqlite(tmp_path: Path) -> SqliteDriver:
    data_dir = str(tmp_path / "data")
    await Migrator(make_engine("sqlite", StorageConfig(), data_dir), CACHE_APP).apply()
    return SqliteDriver(str(Path(data_dir) / "noa.sqlite3"))


async def check_survives_restart(storage: Any) -> None:
    now = [1_000_000.0]
    tier = DurableTier(storage, clock=lambda: now[0])
    before = TieredCache(MemoryCache(10), durable=tier)
    await before.set("report:42", b"expensive", ttl_s=60, durable=True)
    await before.set("scratch", b"cheap", ttl_s=60)

    after = TieredCache(MemoryCache(10), durable=tier)  # a restarted worker: memory is empty
    assert await after.get("report:42") is None  # not asked of the database
    assert await after.get("report:42", durable=True) == b"expensive"
    assert await after.local.get("report:42") == b"expensive"  # copied back into memory
    assert await after.get("scratch", durable=True) is None  # never stored durably

    now[0] += 61
    assert await TieredCache(MemoryCache(10), durable=tier).get("report:42", durable=True) is None
    assert await storage.fetch("SELECT key FROM noa_cache_entry WHERE key = $1", "report:42") == []

    await before.set("gone", b"x", ttl_s=60, durable=True)
    await before.invalidate("gone")
    assert await TieredCache(MemoryCache(10), durable=tier).get("gone", durable=True) is None


async def test_durable_entries_survive_a_restart_on_sqlite(tmp_path: Path) -> None:
    storage = await migrated_sqlite(tmp_path)
    try:
        await check_survives_restart(storage)
    finally:
        await storage.close()


@pytest.mark.postgres
async def test_durable_entries_survive_a_restart_on_postgres() -> None:
    url = "postgresql://127.0.0.1:5432/test"
    config = StorageConfig(postgres_url=Secret(url))
    await Migrator(make_engine("postgres", config, "."), CACHE_APP).apply()
    storage = PostgresStorage(url)
    await storage.start()
    try:
        await storage.execute(
            "DELETE FROM noa_cache_entry WHERE key IN ('report:42', 'scratch', 'gone')"
        )
        await check_survives_restart(storage)
    finally:
        await storage.close()


async def test_durable_without_storage_says_what_to_do() -> None:
    cache = TieredCache(MemoryCache(10))
    with pytest.raises(RuntimeError, match="enable 'storage', then run `noa migrate apply`"):
        await cache.set("k", b"v", durable=True)


async def test_the_plugin_uses_the_storage_plugins_database(noa_boot: Any, tmp_path: Path) -> None:
    data_dir = str(tmp_path / "data")
    await Migrator(make_engine("sqlite", StorageConfig(), data_dir), CACHE_APP).apply()
    config = {"server": {"data_dir": data_dir}}
    async with noa_boot(["http", "storage", "cache"], config=config) as noa:
        await noa.kernel.state[CACHE_STATE_KEY].set("k", b"kept", durable=True)
    async with noa_boot(["http", "storage", "cache"], config=config) as noa:
        assert await noa.kernel.state[CACHE_STATE_KEY].get("k", durable=True) == b"kept"


async def test_the_plugin_turns_durable_off_until_migrated(
    noa_boot: Any, tmp_path: Path, caplog: Any
) -> None:
    config = {"server": {"data_dir": str(tmp_path / "empty")}}
    async with noa_boot(["http", "storage", "cache"], config=config) as noa:
        cache = noa.kernel.state[CACHE_STATE_KEY]
        assert cache.durable is None
        await cache.set("k", b"v")  # the other tiers still work
        assert await cache.get("k") == b"v"
    assert any("run `noa migrate apply`" in r.getMessage() for r in caplog.records)


async def test_redis_stopped_durable_reads_fall_back_to_the_database(
    tmp_path: Path, private_redis: Any
) -> None:
    from noa.builtin_plugins.cache.redis_driver import RedisCache

    storage = await migrated_sqlite(tmp_path)
    tier = DurableTier(storage)
    writer = TieredCache(
        MemoryCache(10),
        RedisCache(private_redis.url, prefix="d:", timeout_s=0.2),
        durable=tier,
        retry_s=0.3,
    )
    reader = TieredCache(
        MemoryCache(10),
        RedisCache(private_redis.url, prefix="d:", timeout_s=0.2),
        durable=tier,
        retry_s=0.3,
    )
    try:
        await writer.set("profile:7", b"ada", ttl_s=60, durable=True)
        private_redis.stop()
        # Another worker, Redis gone, memory empty: the database still has it.
        assert await reader.get("profile:7", durable=True) == b"ada"
        assert (await reader.health()).status == "degraded"
    finally:
        private_redis.start()
        await writer.close()
        await reader.close()
        await storage.close()
