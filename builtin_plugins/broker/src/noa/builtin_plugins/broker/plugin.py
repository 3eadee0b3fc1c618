"""Hook implementations of the broker plugin."""

from __future__ import annotations

from typing import Any

from noa.builtin_plugins.broker.config import BrokerConfig
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
from noa.plugin_sdk.ports.broker import BROKER_STATE_KEY

PLUGIN_INFO = PluginInfo(description="Broker slot drivers (inprocess, nats)")


@hookimpl
def noa_register_config_sections(sections: Registry[type[PluginConfig]]) -> None:
    sections.add("broker", BrokerConfig)


@hookimpl
async def noa_startup(host: Host) -> None:
    config = host.section("broker", BrokerConfig)
    driver: Any = host.driver("broker")
    try:
        broker = driver.from_config(config)
    except ValueError as exc:
        raise ConfigError("broker.nats_url", MASK, "config", str(exc)) from None
    await broker.start()
    host.state[BROKER_STATE_KEY] = broker


@hookimpl
def noa_register_health_checks(checks: Registry[HealthCheck], host: Host) -> None:
    broker = host.state[BROKER_STATE_KEY]
    name = host.config_value("drivers.broker")

    async def check() -> CheckResult:
        if await broker.ping():
            return CheckResult()
        return CheckResult(status="failing", detail=f"{name} broker unreachable")

    checks.add("broker", HealthCheck(check=check, timeout_s=2.0))


@hookimpl
async def noa_shutdown(host: Host) -> None:
    broker = host.state.pop(BROKER_STATE_KEY, None)
    if broker is not None:
        await broker.close()
