"""Storage hooks: plugins that own tables ship their migrations through here."""

from __future__ import annotations

from noa.plugin_sdk import Registry, hookspec


@hookspec
def noa_register_migrations(migrations: Registry[str]) -> None:
    """Register a package of migrations: ``migrations.add("tasks", "my_plugin.migrations")``.

    The value is the importable module path of the plugin's piccolo migrations
    package; ``noa migrate`` applies every registered package in plugin order. Called
    by the storage plugin at assembly and by ``noa migrate``. Returns nothing.
    """
