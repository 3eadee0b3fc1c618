"""Hook implementations of the broker plugin."""

from __future__ import annotations

from noa.builtin_plugins.broker.config import BrokerConfig
from noa.plugin_sdk import HealthCheck, Host, PluginConfig, PluginInfo, Registry, hookimpl
from noa.plugin_sdk.ports.broker import BROKER_STATE_KEY
from noa.plugin_sdk.slot_driver import close_driver, ping_check, start_driver

PLUGIN_INFO = PluginInfo(description="Broker slot drivers (inprocess, nats)")


@hookimpl
def noa_register_config_sections(sections: Registry[type[PluginConfig]]) -> None:
    sections.add("broker", BrokerConfig)


@hookimpl
async def noa_startup(host: Host) -> None:
    config = host.section("broker", BrokerConfig)
    await start_driver(
        host,
        "broker",
        BROKER_STATE_KEY,
        build=lambda driver: driver.from_config(config),
        url_key="broker.nats_url",
    )


@hookimpl
def noa_register_health_checks(checks: Registry[HealthCheck], host: Host) -> None:
    checks.add("broker", ping_check(host, "broker", BROKER_STATE_KEY))


@hookimpl
async def noa_shutdown(host: Host) -> None:
    await close_driver(host, BROKER_STATE_KEY)
