"""Hook implementations of the storage plugin."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from noa.builtin_plugins.storage.cli import migrate_commands
from noa.builtin_plugins.storage.config import StorageConfig
from noa.builtin_plugins.storage.migrate import MigrationError, Migrator, make_engine
from noa.plugin_sdk import (
    CheckResult,
    ConfigError,
    HealthCheck,
    Host,
    PluginConfig,
    PluginInfo,
    PluginStartError,
    Registry,
    hookimpl,
)
from noa.plugin_sdk.config import MASK
from noa.plugin_sdk.ports.storage import STORAGE_STATE_KEY

log = logging.getLogger("noa.storage")

PLUGIN_INFO = PluginInfo(description="Storage slot drivers (sqlite, postgres)")


@hookimpl
def noa_register_config_sections(sections: Registry[type[PluginConfig]]) -> None:
    sections.add("storage", StorageConfig)


@hookimpl
async def noa_startup(host: Host) -> None:
    config = host.section("storage", StorageConfig)
    driver: Any = host.driver("storage")
    try:
        storage = driver.from_config(config, host.server.data_dir)
    except ValueError as exc:
        raise ConfigError("storage.postgres_url", MASK, "config", str(exc)) from None
    await storage.start()
    host.state[STORAGE_STATE_KEY] = storage


@hookimpl
def noa_register_health_checks(checks: Registry[HealthCheck], host: Host) -> None:
    storage = host.state[STORAGE_STATE_KEY]
    name = host.config_value("drivers.storage")

    async def check() -> CheckResult:
        if await storage.ping():
            return CheckResult()
        return CheckResult(status="failing", detail=f"{name} database unreachable")

    checks.add("storage", HealthCheck(check=check, timeout_s=3.0))


def _migrator(host: Host) -> Migrator:
    config = host.section("storage", StorageConfig)
    apps = host.collect("noa_register_migrations", Registry[str]("migrations app"))
    engine = make_engine(host.config_value("drivers.storage"), config, host.server.data_dir)
    return Migrator(engine, {c.name: c.item for c in apps.contributions()})


@hookimpl
def noa_before_serve(host: Host) -> None:
    if host.section("storage", StorageConfig).migrate_on_start:
        try:
            applied = asyncio.run(_migrator(host).apply())
        except MigrationError as exc:
            raise PluginStartError("storage", str(exc)) from None
        for app, ids in applied.items():
            log.info("applied %d migration(s) of %s: %s", len(ids), app, ", ".join(ids))


@hookimpl
def noa_register_commands(commands: Registry[Any]) -> None:
    commands.add("migrate", migrate_commands(_migrator))


@hookimpl
async def noa_shutdown(host: Host) -> None:
    storage = host.state.pop(STORAGE_STATE_KEY, None)
    if storage is not None:
        await storage.close()
