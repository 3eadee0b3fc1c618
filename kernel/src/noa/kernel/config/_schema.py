"""The kernel's own config sections: ``profile``, ``[server]``, ``[plugins]``, ``[drivers]``.

Every other top-level table belongs to the plugin that registered it.
"""

from __future__ import annotations

import msgspec
from noa.plugin_sdk.types import ServerSettings

__all__ = ["CORE_SLOTS", "KERNEL_SECTIONS", "PluginsSettings"]

# The driver slots the kernel owns, with the driver each uses when config names none.
CORE_SLOTS: dict[str, str] = {
    "storage": "sqlite",
    "cache": "memory",
    "vectors": "embedded",
    "broker": "inprocess",
    "device": "cpu",
}


class PluginsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The ``[plugins]`` section: which plugins run, and in what order."""

    # Enable every installed plugin (entry point group noa.plugins) unless disabled.
    autoload: bool = True
    # Plugins to enable even when autoload is off. With autoload off, only these run.
    enable: tuple[str, ...] = ()
    # Plugins never to load. Wins over enable.
    disable: tuple[str, ...] = ()
    # Plugins whose failure to load or start is reported, not fatal.
    optional: tuple[str, ...] = ()
    # Preferred load order; plugins not named follow in name order. Declared
    # before/after/requires of each plugin are honoured on top of this.
    order: tuple[str, ...] = ("http", "observability")


class KernelSections(msgspec.Struct, frozen=True, kw_only=True):
    profile: str = "embedded"
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    plugins: PluginsSettings = msgspec.field(default_factory=PluginsSettings)
    drivers: dict[str, str] = msgspec.field(default_factory=lambda: dict(CORE_SLOTS))


KERNEL_SECTIONS = frozenset({"profile", "server", "plugins", "drivers"})
