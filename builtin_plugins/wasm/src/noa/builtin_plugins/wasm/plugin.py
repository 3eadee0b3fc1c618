"""Hook implementations of the wasm plugin; each delegates to its module."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from noa.builtin_plugins.wasm.config import WasmConfig
from noa.plugin_sdk import (
    CheckResult,
    HealthCheck,
    Host,
    HostedPlugins,
    PluginConfig,
    PluginInfo,
    Registry,
    RouteGroup,
    hookimpl,
)
from noa.plugin_sdk.tasks import TaskType

if TYPE_CHECKING:  # wasmtime loads only in a process that serves
    from noa.builtin_plugins.wasm.service import WasmHost

PLUGIN_INFO = PluginInfo(
    description="WASM plugins: WASI modules with a manifest, run by wasmtime in a "
    "capability-scoped sandbox; invoked over HTTP, as tasks and from other plugins",
    # Loaded (compiled) before the task worker starts, so a queued wasm:* task never
    # finds its plugin missing.
    before=("orchestration",),
)

_STATE_KEY = "noa.wasm"  # = service.WASM_STATE_KEY, without importing wasmtime here


def _service(host: Host) -> WasmHost:
    service: WasmHost | None = host.state.get(_STATE_KEY)
    if service is None:
        from noa.builtin_plugins.wasm.service import WasmHost

        service = WasmHost(host.section("wasm", WasmConfig), host.server.data_dir)
        host.state[_STATE_KEY] = service
    return service


@hookimpl
def noa_register_config_sections(sections: Registry[type[PluginConfig]]) -> None:
    sections.add("wasm", WasmConfig)


@hookimpl
def noa_configure(host: Host) -> None:
    # Manifests only, no compiling: the plugin list and the task types need them before
    # (or without) startup.
    _service(host).scan()


@hookimpl
def noa_register_hosted_plugins(hosted: Registry[HostedPlugins], host: Host) -> None:
    service = _service(host)
    hosted.add(
        "wasm",
        HostedPlugins(
            list_plugins=service.records,
            description="WASM plugins of [wasm] plugin_dir and noa.wasm_plugins entry points",
        ),
    )


@hookimpl
def noa_register_task_types(task_types: Registry[TaskType], host: Host) -> None:
    from noa.builtin_plugins.wasm.tasks import task_types as wasm_task_types

    for name, task_type in wasm_task_types(_service(host)).items():
        task_types.add(name, task_type)


@hookimpl
def noa_register_routes(routes: Registry[RouteGroup], host: Host) -> None:
    from noa.builtin_plugins.wasm.api import ADMIN, wasm_handlers

    group = RouteGroup(handlers=tuple(wasm_handlers(_service(host))), tags=("wasm",), scope=ADMIN)
    routes.add("wasm", group)


@hookimpl
async def noa_startup(host: Host) -> None:
    await _service(host).start()


@hookimpl
def noa_register_health_checks(checks: Registry[HealthCheck], host: Host) -> None:
    service = _service(host)

    async def plugins() -> CheckResult:
        # A plugin that fails to load is reported, not fatal: the others serve.
        rows = service.plugins()
        failed = [f"{r.name} ({r.error_code})" for r in rows if r.state == "failed"]
        loaded = [r.name for r in rows if r.state == "loaded"]
        detail = "loaded: " + (", ".join(loaded) or "none")
        if failed:
            return CheckResult(status="degraded", detail=detail + "; failed: " + ", ".join(failed))
        return CheckResult(detail=detail)

    checks.add("wasm", HealthCheck(check=plugins, timeout_s=1.0, critical=False))


@hookimpl
async def noa_shutdown(host: Host) -> None:
    service: WasmHost | None = host.state.pop(_STATE_KEY, None)
    if service is not None:
        await service.close()


@hookimpl
def noa_register_commands(commands: Registry[Any]) -> None:
    from noa.builtin_plugins.wasm.cli import wasm

    commands.add("wasm", wasm)
