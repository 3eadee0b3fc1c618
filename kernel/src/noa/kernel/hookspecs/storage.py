"""Storage hooks: plugins that own tables ship their migrations through here."""

from __future__ import annotations

from noa.plugin_sdk import Registry, hookspec


@hookspec
def noa_register_migrations(migrations: Registry[str]) -> None:
    """Register the plugin's piccolo app: ``migrations.add("notes", "my_plugin.piccolo_app")``.

    The name is the piccolo app name; the value is the importable path of a module
    whose ``APP_CONFIG`` (``piccolo.conf.apps.AppConfig``) points at the plugin's
    migrations folder. ``noa migrate`` (and ``storage.migrate_on_start``) apply every
    registered app in plugin order. Called by the storage plugin when it migrates.
    Returns nothing. See ``migrations/README.md``.
    """
