"""The HTTP core's own routes: liveness, readiness (and their probe aliases), plugins."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Response, get
from litestar.handlers import HTTPRouteHandler
from noa.plugin_sdk import Host, PluginRecord

__all__ = ["api_handlers", "probe_handlers"]


class Health(msgspec.Struct, frozen=True):
    status: str
    timestamp: str


class PluginList(msgspec.Struct, frozen=True):
    object: str
    data: list[PluginRecord]


def probe_handlers(host: Host) -> list[HTTPRouteHandler]:
    @get(
        ["/health", "/livez", "/healthz"], summary="Liveness", tags=["probes"], sync_to_thread=False
    )
    def health() -> Health:
        """The process is up and serving. Always 200 while the server runs."""
        return Health(status="ok", timestamp=datetime.now(UTC).isoformat())

    @get(["/ready", "/readyz"], summary="Readiness", tags=["probes"])
    async def ready() -> Response[Any]:
        """200 when every enabled component's critical check passes, else 503.

        The body lists each component with its status (ok, degraded, failing), the plugin
        that owns it, how long its check took and why it failed.
        """
        report = await host.readiness()
        return Response(
            content=msgspec.to_builtins(report),
            status_code=200 if report.ready else 503,
        )

    return [health, ready]


def api_handlers(host: Host) -> list[HTTPRouteHandler]:
    @get("/v1/plugins", summary="List plugins", tags=["plugins"], sync_to_thread=False)
    def list_plugins() -> PluginList:
        """Every discovered plugin: the same rows as ``noa plugins list``. Python
        plugins (``kind`` "python"), then the guest plugins each hosts (``kind`` "wasm"
        ..., ``hosted_by`` the hosting plugin)."""
        return PluginList(object="list", data=host.plugins())

    return [list_plugins]
