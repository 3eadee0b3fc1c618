"""Hook implementations of the storage plugin."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from noa.builtin_plugins.storage.cli import migrate_commands
from noa.builtin_plugins.storage.config import StorageConfig
from noa.builtin_plugins.storage.migrate import MigrationError, Migrator, make_engine
from noa.plugin_sdk import (
    HealthCheck,
    Host,
    PluginConfig,
    PluginInfo,
    PluginStartError,
    Registry,
    hookimpl,
)
from noa.plugin_sdk.ports.storage import STORAGE_STATE_KEY
from noa.plugin_sdk.slot_driver import close_driver, ping_check, start_driver

log = logging.getLogger("noa.storage")

PLUGIN_INFO = PluginInfo(description="Storage slot drivers (sqlite, postgres)")


@hookimpl
def noa_register_config_sections(sections: Registry[type[PluginConfig]]) -> None:
    sections.add("storage", StorageConfig)


@hookimpl
async def noa_startup(host: Host) -> None:
    config = host.section("storage", StorageConfig)
    await start_driver(
        host,
        "storage",
        STORAGE_STATE_KEY,
        build=lambda driver: driver.from_config(config, host.server.data_dir),
        url_key="storage.postgres_url",
    )


@hookimpl
def noa_register_health_checks(checks: Registry[HealthCheck], host: Host) -> None:
    checks.add("storage", ping_check(host, "storage", STORAGE_STATE_KEY, timeout_s=3.0))


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
    await close_driver(host, STORAGE_STATE_KEY)
