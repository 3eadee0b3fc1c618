"""The kernel of one process: config, plugins, drivers, lifecycle and readiness.

:meth:`Kernel.boot` does everything that can fail before serving (config, plugin
import, config sections, driver slots, ``noa_configure``), so ``noa serve`` checks it in
the parent process and refuses to start with one clear line.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

import msgspec
import pluggy
from noa.kernel.config import CORE_SLOTS, BootOptions, Config, load
from noa.kernel.drivers import DriverSlots
from noa.kernel.hookspecs import HOOKSPEC_MODULES
from noa.kernel.plugins import PluginSet
from noa.plugin_sdk import PROJECT_NAME, Host
from noa.plugin_sdk.config import PluginConfig
from noa.plugin_sdk.errors import NoaError, PluginLoadError, PluginStartError
from noa.plugin_sdk.registry import Contribution, Registry
from noa.plugin_sdk.types import (
    CheckResult,
    ComponentHealth,
    DriverSlot,
    HealthCheck,
    HostedPlugins,
    PluginRecord,
    ReadinessReport,
    ServerSettings,
)

__all__ = ["Kernel"]

log = logging.getLogger("noa.kernel")

C = TypeVar("C", bound=PluginConfig)
R = TypeVar("R", bound=Registry[Any])


class Kernel:
    """Implements :class:`noa.plugin_sdk.Host` for the plugins of this process."""

    def __init__(self, config: Config, pm: pluggy.PluginManager, plugins: PluginSet) -> None:
        self.config = config
        self.pm = pm
        self.plugin_set = plugins
        self._state: dict[str, Any] = {}
        self._checks: Registry[HealthCheck] | None = None
        self._hosted: list[Contribution[HostedPlugins]] = []
        self.drivers = DriverSlots(config.kernel.drivers, {})

    # -- boot ---------------------------------------------------------------------------

    @classmethod
    def boot(
        cls,
        boot: BootOptions | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        extra_plugins: Mapping[str, object] | None = None,
    ) -> Kernel:
        """Load config and plugins and run the configure-time hooks.

        Raises :class:`~noa.plugin_sdk.ConfigError` or :class:`PluginLoadError`.
        ``extra_plugins`` adds plugin objects that are not installed (tests, embedding).
        """
        config = load(boot or BootOptions(), environ)
        pm = pluggy.PluginManager(PROJECT_NAME)
        for module in HOOKSPEC_MODULES:
            pm.add_hookspecs(module)
        plugins = PluginSet(pm, config.kernel.plugins)
        plugins.load(extra_plugins)
        kernel = cls(config, pm, plugins)
        sections = kernel.collect(
            "noa_register_config_sections", Registry[type[PluginConfig]]("config section")
        )
        for item in sections.contributions():
            config.bind_section(item.name, item.item)
        slots = Registry[DriverSlot]("driver slot")
        slots.bind("kernel")
        for slot, default in CORE_SLOTS.items():
            slots.add(slot, DriverSlot(description=f"core slot {slot}", default=default))
        kernel.collect("noa_register_driver_slots", slots)
        kernel.drivers = DriverSlots(config.kernel.drivers, {n: slots.get(n) for n in slots})
        host: Host = kernel  # mypy checks here that the kernel is a complete Host
        kernel.call_each("noa_configure", host=host)
        hosted = kernel.collect("noa_register_hosted_plugins", Registry[Any]("hosted plugin kind"))
        for item in hosted.contributions():
            if not isinstance(item.item, HostedPlugins):
                raise PluginLoadError(
                    item.plugin,
                    f"hosted plugin kind {item.name!r} is a {type(item.item).__name__}, "
                    "not a noa.plugin_sdk.HostedPlugins",
                )
        kernel._hosted = hosted.contributions()
        for name in config.unclaimed_sections():
            log.warning("config section [%s] is not used by any enabled plugin", name)
        return kernel

    # -- calling hooks ------------------------------------------------------------------

    def _impls(self, hook_name: str) -> dict[str, pluggy.HookImpl]:
        caller = getattr(self.pm.hook, hook_name)
        return {impl.plugin_name: impl for impl in caller.get_hookimpls()}

    def _call(self, hook_name: str, kwargs_for: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
        """Call ``hook_name`` on each plugin in plugin order with the arguments its
        implementation declares; a failure names the plugin and the hook."""
        impls = self._impls(hook_name)
        results: dict[str, Any] = {}
        for plugin in self.plugin_set.loaded:
            impl = impls.get(plugin.name)
            if impl is None:
                continue
            kwargs = kwargs_for(plugin.name)
            try:
                results[plugin.name] = impl.function(**{a: kwargs[a] for a in impl.argnames})
            except NoaError:
                raise  # already names what failed
            except Exception as exc:
                raise PluginLoadError(
                    plugin.name, f"{hook_name} failed: {type(exc).__name__}: {exc}"
                ) from exc
        return results

    def call_each(self, hook_name: str, **kwargs: Any) -> dict[str, Any]:
        """Call ``hook_name`` on each plugin in plugin order; errors name the plugin."""
        return self._call(hook_name, lambda _plugin: kwargs)

    def call_first(self, hook_name: str, **kwargs: Any) -> Any:
        """The first non-None result of ``hook_name`` in plugin order (for ``firstresult``
        hooks such as ``noa_access_policy``); None when no plugin answers."""
        impls = self._impls(hook_name)
        for plugin in self.plugin_set.loaded:
            impl = impls.get(plugin.name)
            if impl is None:
                continue
            try:
                result = impl.function(**{a: kwargs[a] for a in impl.argnames})
            except NoaError:
                raise
            except Exception as exc:
                raise PluginLoadError(
                    plugin.name, f"{hook_name} failed: {type(exc).__name__}: {exc}"
                ) from exc
            if result is not None:
                return result
        return None

    def collect(self, hook_name: str, registry: R) -> R:
        spec = getattr(self.pm.hook, hook_name).spec
        registrar_arg = next(a for a in spec.argnames if a != "host")

        def kwargs_for(plugin: str) -> dict[str, Any]:
            registry.bind(plugin)
            return {"host": self, registrar_arg: registry}

        self._call(hook_name, kwargs_for)
        return registry

    # -- Host ---------------------------------------------------------------------------

    @property
    def profile(self) -> str:
        return self.config.profile

    @property
    def server(self) -> ServerSettings:
        return self.config.kernel.server

    @property
    def state(self) -> dict[str, Any]:
        return self._state

    def section(self, name: str, kind: type[C]) -> C:
        return self.config.section(name, kind)

    def config_value(self, dotted_key: str) -> Any:
        return self.config.value(dotted_key)

    def driver(self, slot: str) -> Any:
        return self.drivers.load(slot)

    def plugins(self) -> list[PluginRecord]:
        """The Python plugins, then the guests of each hosting plugin, in plugin order."""
        rows = self.plugin_set.records()
        for hosted in self._hosted:
            rows.extend(_guests(hosted))
        return rows

    def effective_config(self) -> dict[str, Any]:
        return self.config.effective()

    # -- lifecycle ----------------------------------------------------------------------

    def asgi_app(self) -> Any:
        """The ASGI app from the first plugin answering ``noa_asgi_app``."""
        app = self.pm.hook.noa_asgi_app(host=self)
        if app is None:
            raise PluginLoadError(
                "http", "no enabled plugin builds the ASGI app: enable the 'http' plugin"
            )
        return app

    async def startup(self) -> None:
        """Run ``noa_startup`` in plugin order; undo what started if a required one fails."""
        impls = self._impls("noa_startup")
        for plugin in self.plugin_set.loaded:
            impl = impls.get(plugin.name)
            try:
                if impl is not None:
                    result = impl.function(**{a: self for a in impl.argnames})
                    if inspect.isawaitable(result):
                        await result
            except Exception as exc:
                message = f"startup failed: {type(exc).__name__}: {exc}"
                if self.plugin_set.is_optional(plugin.name):
                    log.error("optional plugin %r %s; continuing without it", plugin.name, message)
                    self.plugin_set.errors[plugin.name] = message
                    continue
                await self.shutdown()
                raise PluginStartError(plugin.name, message) from exc
            self.plugin_set.started.add(plugin.name)
        self._checks = self.collect(
            "noa_register_health_checks", Registry[HealthCheck]("health check")
        )

    async def shutdown(self) -> None:
        """Run ``noa_shutdown`` in reverse order for every plugin that started."""
        impls = self._impls("noa_shutdown")
        for plugin in reversed(self.plugin_set.loaded):
            if plugin.name not in self.plugin_set.started:
                continue
            self.plugin_set.started.discard(plugin.name)
            impl = impls.get(plugin.name)
            if impl is None:
                continue
            try:
                result = impl.function(**{a: self for a in impl.argnames})
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("plugin %r failed to shut down cleanly", plugin.name)

    async def readiness(self) -> ReadinessReport:
        checks = self._checks.contributions() if self._checks is not None else []
        components = await asyncio.gather(*(_run_check(c.name, c.plugin, c.item) for c in checks))
        failed = [c for c in components if c.status == "failing" and c.critical]
        degraded = [c for c in components if c.status != "ok"]
        started = self._checks is not None
        status: Literal["ready", "degraded", "not_ready"] = (
            "not_ready" if not started or failed else "degraded" if degraded else "ready"
        )
        return ReadinessReport(
            ready=status != "not_ready", status=status, components=tuple(components)
        )


def _guests(hosted: Contribution[HostedPlugins]) -> list[PluginRecord]:
    """The rows of one hosting plugin, marked with their kind and host. A lister that
    fails gives one failed row naming it: the rest of the list still answers."""
    try:
        rows = list(hosted.item.list_plugins())
    except Exception as exc:
        log.exception("plugin %r failed to list its %s plugins", hosted.plugin, hosted.name)
        rows = [
            PluginRecord(
                name=hosted.name,
                version="",
                distribution="",
                entry_point="",
                enabled=True,
                optional=True,
                state="failed",
                error=f"listing failed: {type(exc).__name__}: {exc}",
            )
        ]
    return [msgspec.structs.replace(r, kind=hosted.name, hosted_by=hosted.plugin) for r in rows]


async def _run_check(name: str, plugin: str, check: HealthCheck) -> ComponentHealth:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(check.timeout_s):
            outcome = await check.check()
        if isinstance(outcome, CheckResult):
            result = outcome
        elif outcome is False:
            result = CheckResult(status="failing", detail="check returned false")
        else:
            result = CheckResult()
    except TimeoutError:
        result = CheckResult(status="failing", detail=f"no answer within {check.timeout_s:g} s")
    except Exception as exc:
        result = CheckResult(status="failing", detail=f"{type(exc).__name__}: {exc}")
    elapsed = (time.perf_counter() - started) * 1000
    return ComponentHealth(
        name=name,
        plugin=plugin,
        status=result.status,
        critical=check.critical,
        duration_ms=round(elapsed, 2),
        detail=result.detail,
    )
