"""Lifecycle hooks: config sections, driver slots, hosted plugins, readiness, startup
and shutdown.

Call order at boot: ``noa_register_config_sections`` -> config validated ->
``noa_register_driver_slots`` -> ``noa_configure`` -> ``noa_register_hosted_plugins``
-> (app assembly) ->
``noa_register_health_checks`` -> ``noa_startup`` ... ``noa_shutdown`` (reverse order).
``noa_before_serve`` runs once in the ``noa serve`` parent process before workers start.
"""

from __future__ import annotations

from collections.abc import Awaitable

from noa.plugin_sdk import Host, Registry, hookspec
from noa.plugin_sdk.config import PluginConfig
from noa.plugin_sdk.types import DriverSlot, HealthCheck, HostedPlugins


@hookspec
def noa_register_config_sections(sections: Registry[type[PluginConfig]]) -> None:
    """Register config sections: ``sections.add("name", MyConfig)``.

    ``name`` is a top-level table (``[name]`` in TOML, ``NOA_NAME__KEY`` in the
    environment) and ``MyConfig`` a frozen :class:`~noa.plugin_sdk.PluginConfig`
    subclass with a default for every field. The kernel validates the merged layers
    against it; an invalid value stops the server with exit code 2 naming key, value
    and layer. Called once per plugin, before any other hook. Returns nothing.
    """


@hookspec
def noa_register_driver_slots(slots: Registry[DriverSlot]) -> None:
    """Declare extra driver slots: ``slots.add("greeter", DriverSlot(description=...,
    default="plain"))``.

    The kernel already owns ``storage``, ``cache``, ``vectors``, ``broker`` and
    ``device``. A slot named ``x`` loads drivers from the entry-point group
    ``noa.drivers.x``, chosen by ``[drivers] x = "name"``. Returns nothing.
    """


@hookspec
def noa_configure(host: Host) -> None:
    """Called once per process after config is validated and before the app is built.

    Keep it synchronous and fast: set up objects the plugin shares through
    ``host.state``. Raising stops start-up with the plugin named. Returns nothing.
    """


@hookspec
def noa_register_hosted_plugins(hosted: Registry[HostedPlugins], host: Host) -> None:
    """Contribute the guest plugins this plugin hosts to the plugin list:
    ``hosted.add("wasm", HostedPlugins(list_plugins=fn))``.

    The name is the guests' kind. ``fn()`` returns
    :class:`~noa.plugin_sdk.PluginRecord` rows; ``noa plugins list`` and
    ``GET /v1/plugins`` show them after the Python plugins, with ``kind`` and
    ``hosted_by`` (this plugin) set by the kernel. ``fn`` is called every time the list
    is read, also by ``noa plugins list``, which boots without starting plugins: answer
    from memory (what ``noa_configure`` read), never compile or connect. Called once
    per process, after ``noa_configure``. Returns nothing.
    """


@hookspec
def noa_register_health_checks(checks: Registry[HealthCheck], host: Host) -> None:
    """Register readiness checks: ``checks.add("database", HealthCheck(check=fn))``.

    ``/ready``, ``/readyz`` and ``noa check`` run every check; the server is ready when
    every critical check passes. Called once per process. Returns nothing.
    """


@hookspec
def noa_startup(host: Host) -> Awaitable[None] | None:
    """Start the plugin (open pools, start background tasks) in each worker process.

    Called in plugin order; may return an awaitable, which is awaited before the next
    plugin starts. Raising stops start-up (exit code 1, the plugin named) unless the
    plugin is marked optional, in which case it is reported and skipped.
    """


@hookspec
def noa_shutdown(host: Host) -> Awaitable[None] | None:
    """Stop the plugin: release what ``noa_startup`` took.

    Called in reverse plugin order, only for plugins whose startup succeeded, after
    in-flight requests have drained. May return an awaitable. An exception is logged
    and does not stop the other plugins from shutting down.
    """


@hookspec
def noa_before_serve(host: Host) -> None:
    """Called once in the ``noa serve`` parent process before granian starts workers.

    For process-wide preparation that must happen exactly once (emptying a
    multiprocess metrics directory, exporting environment for the workers). Returns
    nothing.
    """
