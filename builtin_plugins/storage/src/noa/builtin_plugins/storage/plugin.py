"""Hook implementations of the storage plugin."""

from __future__ import annotations

from typing import Any

from noa.builtin_plugins.storage.config import StorageConfig
from noa.plugin_sdk import (
    CheckResult,
    ConfigError,
    HealthCheck,
    Host,
    PluginConfig,
    PluginInfo,
    Registry,
    hookimpl,
)
from noa.plugin_sdk.config import MASK
from noa.plugin_sdk.ports.storage import STORAGE_STATE_KEY

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


@hookimpl
async def noa_shutdown(host: Host) -> None:
    storage = host.state.pop(STORAGE_STATE_KEY, None)
    if storage is not None:
        await storage.close()
