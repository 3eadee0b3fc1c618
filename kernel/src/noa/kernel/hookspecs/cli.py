"""CLI hooks: plugins add sub-commands to ``noa``."""

from __future__ import annotations

from typing import Any

from noa.plugin_sdk import Registry, hookspec


@hookspec
def noa_register_commands(commands: Registry[Any]) -> None:
    """Contribute ``noa`` sub-commands: ``commands.add("models", click_group)``.

    Each item is a :mod:`click` command or group, added under its registered name.
    Called once when the CLI starts, before arguments are parsed. Returns nothing.
    """
