"""The host: what the kernel offers a plugin at assembly and lifecycle time.

Hooks such as ``noa_configure`` and ``noa_startup`` receive a :class:`Host`. It is a
Protocol so the SDK stays free of the kernel; the kernel provides the implementation.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from noa.plugin_sdk.config import PluginConfig
from noa.plugin_sdk.registry import Registry
from noa.plugin_sdk.types import PluginRecord, ReadinessReport, ServerSettings

__all__ = ["Host"]

C = TypeVar("C", bound=PluginConfig)
R = TypeVar("R", bound=Registry[Any])


class Host(Protocol):
    """The running kernel as a plugin sees it."""

    @property
    def profile(self) -> str:
        """The active config profile (``embedded``, ``dev``, ``staging``, ``prod``)."""
        ...

    @property
    def server(self) -> ServerSettings:
        """The ``[server]`` section."""
        ...

    @property
    def state(self) -> dict[str, Any]:
        """Per-process objects plugins share by name (an event bus, a metrics registry)."""
        ...

    def section(self, name: str, kind: type[C]) -> C:
        """The validated config section ``[name]`` registered by a plugin as ``kind``."""
        ...

    def config_value(self, dotted_key: str) -> Any:
        """Any effective config value by dotted key (``"server.port"``); KeyError if unset."""
        ...

    def driver(self, slot: str) -> Any:
        """The driver chosen by config for ``slot``, loaded on first use (stevedore).

        Raises :class:`~noa.plugin_sdk.errors.DriverLoadError` naming the slot, the name
        asked for and the names available.
        """
        ...

    def collect(self, hook_name: str, registry: R) -> R:
        """Call the registration hook ``hook_name`` on every enabled plugin, in plugin
        order, with ``registry`` bound to each in turn; return the filled registry."""
        ...

    def call_first(self, hook_name: str, **kwargs: Any) -> Any:
        """Call the ``firstresult`` hook ``hook_name`` on enabled plugins in plugin order
        and return the first result that is not ``None`` (``None`` if none answers)."""
        ...

    def plugins(self) -> list[PluginRecord]:
        """Every discovered plugin with its state (the ``noa plugins list`` rows), then
        the guest plugins that plugins host (``noa_register_hosted_plugins``)."""
        ...

    async def readiness(self) -> ReadinessReport:
        """Run every registered health check once (bounded by each check's timeout)."""
        ...

    def effective_config(self) -> dict[str, Any]:
        """The effective config with secrets masked, and the layer each key came from,
        as ``{"values": {...}, "sources": {"dotted.key": "layer"}}``."""
        ...
