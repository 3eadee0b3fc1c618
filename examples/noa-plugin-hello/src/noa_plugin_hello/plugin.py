"""Hook implementations of noa-plugin-hello."""

from __future__ import annotations

from typing import Any

import click
from noa.plugin_sdk import (
    CheckResult,
    DriverSlot,
    HealthCheck,
    Host,
    PluginConfig,
    PluginInfo,
    Registry,
    RouteGroup,
    hookimpl,
)

from noa_plugin_hello.config import HelloConfig
from noa_plugin_hello.routes import handlers

PLUGIN_INFO = PluginInfo(description="Example plugin: greets people", after=("http",))


@hookimpl
def noa_register_config_sections(sections: Registry[type[PluginConfig]]) -> None:
    sections.add("hello", HelloConfig)


@hookimpl
def noa_register_driver_slots(slots: Registry[DriverSlot]) -> None:
    slots.add(
        "greeter", DriverSlot(description="how the hello plugin words a greeting", default="plain")
    )


@hookimpl
def noa_register_routes(routes: Registry[RouteGroup], host: Host) -> None:
    routes.add(
        "hello", RouteGroup(handlers=tuple(handlers(host)), tags=("hello",), scope="hello:greet")
    )


@hookimpl
def noa_register_health_checks(checks: Registry[HealthCheck], host: Host) -> None:
    config = host.section("hello", HelloConfig)

    async def check() -> CheckResult:
        if config.ready:
            return CheckResult()
        return CheckResult(status="failing", detail="[hello] ready is false")

    checks.add("hello", HealthCheck(check=check))


@hookimpl
def noa_register_commands(commands: Registry[Any]) -> None:
    @click.command("hello")
    @click.argument("name")
    @click.pass_obj
    def hello(state: Any, name: str) -> None:
        """Print a greeting using the configured greeter driver."""
        host = state.host()
        config = host.section("hello", HelloConfig)
        click.echo(host.driver("greeter")().greet(config.greeting, name))

    commands.add("hello", hello)
