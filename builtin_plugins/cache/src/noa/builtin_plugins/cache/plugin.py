"""Hook implementations of the cache plugin; each delegates to its module."""

from __future__ import annotations

import logging
from typing import Any

from noa.builtin_plugins.cache.config import CacheConfig
from noa.builtin_plugins.cache.durable import DurableTier
from noa.builtin_plugins.cache.tiered import TieredCache
from noa.plugin_sdk import (
    ConfigError,
    HealthCheck,
    Host,
    PluginConfig,
    PluginInfo,
    Registry,
    hookimpl,
)
from noa.plugin_sdk.config import MASK
from noa.plugin_sdk.memory_cache import MemoryCache
from noa.plugin_sdk.metrics import metrics_of
from noa.plugin_sdk.ports.cache import CACHE_STATE_KEY
from noa.plugin_sdk.ports.storage import STORAGE_STATE_KEY
from noa.plugin_sdk.slot_driver import close_driver

log = logging.getLogger("noa.cache")

PLUGIN_INFO = PluginInfo(
    description="Cache slot drivers (memory, redis) and the tiered cache",
    after=("observability", "storage"),
)


@hookimpl
def noa_register_migrations(migrations: Registry[str]) -> None:
    migrations.add("cache", "noa.builtin_plugins.cache.piccolo_app")


async def _durable_tier(host: Host) -> DurableTier | None:
    storage = host.state.get(STORAGE_STATE_KEY)
    if storage is None:
        return None
    tier = DurableTier(storage)
    try:
        await tier.purge_expired()
    except Exception as exc:
        log.warning(
            "durable cache entries are off: their table is not usable (%s: %s); "
            "run `noa migrate apply`",
            type(exc).__name__,
            exc,
        )
        return None
    return tier


@hookimpl
def noa_register_config_sections(sections: Registry[type[PluginConfig]]) -> None:
    sections.add("cache", CacheConfig)


@hookimpl
async def noa_startup(host: Host) -> None:
    config = host.section("cache", CacheConfig)
    driver: Any = host.driver("cache")
    name = host.config_value("drivers.cache")
    local = MemoryCache(config.memory_max_entries)
    shared = None
    if name != "memory":
        try:
            shared = driver.from_config(config)
        except ValueError as exc:  # e.g. a malformed redis_url
            raise ConfigError("cache.redis_url", MASK, "config", str(exc)) from None
    cache = TieredCache(
        local,
        shared,
        durable=await _durable_tier(host),
        shared_name=name,
        default_ttl_s=config.default_ttl_s,
        local_ttl_s=config.local_ttl_s,
        retry_s=config.redis_retry_s,
        shared_required=config.redis_required,
        metrics=metrics_of(host.state),
    )
    host.state[CACHE_STATE_KEY] = cache
    await cache.health()  # says once at start-up, in the log, if the shared tier is down


@hookimpl
def noa_register_health_checks(checks: Registry[HealthCheck], host: Host) -> None:
    cache: TieredCache = host.state[CACHE_STATE_KEY]
    checks.add("cache", HealthCheck(check=cache.health, timeout_s=2.0))


@hookimpl
async def noa_shutdown(host: Host) -> None:
    await close_driver(host, CACHE_STATE_KEY)
