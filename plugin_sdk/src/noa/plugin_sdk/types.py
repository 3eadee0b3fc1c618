"""Value types shared by the kernel and plugins (frozen msgspec Structs)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Literal

import msgspec

__all__ = [
    "CheckResult",
    "CheckStatus",
    "ComponentHealth",
    "DriverSlot",
    "HealthCheck",
    "HostedPlugins",
    "PluginInfo",
    "PluginRecord",
    "ReadinessReport",
    "ServerSettings",
]

CheckStatus = Literal["ok", "degraded", "failing"]


class PluginInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a plugin declares about itself, as ``PLUGIN_INFO`` on its entry-point object.

    ``requires`` names plugins that must be enabled for this one to work (a missing one
    is a load error); ``after``/``before`` only order this plugin relative to others
    when they are present. Startup runs in that order, shutdown in reverse.
    """

    description: str = ""
    requires: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    before: tuple[str, ...] = ()


class PluginRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``noa plugins list`` and ``GET /v1/plugins``.

    A Python plugin has ``kind="python"``. A guest plugin run by another plugin (a WASM
    module run by ``wasm`` ...) has its host's kind and names that plugin in
    ``hosted_by``; its ``entry_point`` says where the host found it, ``loaded`` means
    declared (read, not yet runnable) and ``started`` runnable in this process.
    """

    name: str
    version: str
    distribution: str
    entry_point: str
    enabled: bool
    optional: bool
    state: Literal["loaded", "started", "disabled", "failed"]
    hooks: tuple[str, ...] = ()
    description: str = ""
    error: str | None = None
    kind: str = "python"
    hosted_by: str | None = None


class HostedPlugins(msgspec.Struct, frozen=True, kw_only=True):
    """Guest plugins that a plugin hosts, contributed through
    ``noa_register_hosted_plugins`` under their kind (``hosted.add("wasm", ...)``).

    ``list_plugins`` answers the current rows each time the plugin list is read (every
    ``GET /v1/plugins``): keep it in memory and cheap, no I/O. The kernel sets each
    row's ``kind`` and ``hosted_by``.
    """

    list_plugins: Callable[[], Sequence[PluginRecord]]
    description: str = ""


class CheckResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a health check found. A check may also return ``True``/``None`` for ok."""

    status: CheckStatus = "ok"
    detail: str = ""


CheckFunction = Callable[[], Awaitable[CheckResult | bool | None]]


class HealthCheck(msgspec.Struct, frozen=True, kw_only=True):
    """A readiness check. A non-critical one that fails makes the server degraded, not unready.

    ``timeout_s`` bounds one run; a check that takes longer is reported failing.
    """

    check: CheckFunction
    timeout_s: float = 2.0
    critical: bool = True


class ComponentHealth(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    plugin: str
    status: CheckStatus
    critical: bool
    duration_ms: float
    detail: str = ""


class ReadinessReport(msgspec.Struct, frozen=True, kw_only=True):
    """``/ready`` and ``noa check``: ready when every critical component is ok or degraded."""

    ready: bool
    status: Literal["ready", "degraded", "not_ready"]
    components: tuple[ComponentHealth, ...] = ()


class ServerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The ``[server]`` section: how ``noa serve`` listens. Read-only for plugins."""

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8080
    workers: Annotated[int, msgspec.Meta(ge=1, le=256)] = 1
    ssl_certificate: str | None = None
    ssl_keyfile: str | None = None
    # Seconds SIGTERM waits for in-flight requests before workers are killed.
    shutdown_grace_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 10.0
    # Where plugins keep files (SQLite database, model cache, compiled WASM ...).
    data_dir: str = ".noa"


class DriverSlot(msgspec.Struct, frozen=True, kw_only=True):
    """A slot where config picks exactly one driver (entry-point group ``noa.drivers.<name>``).

    ``default`` is the driver used when ``[drivers]`` names none for this slot.
    """

    description: str
    default: str = ""
