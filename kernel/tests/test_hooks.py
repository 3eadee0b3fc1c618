"""Every registration hook reaches every plugin that implements it, in plugin order, with
the contribution attributed to that plugin."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest
from noa.kernel import BootOptions, Kernel
from noa.kernel.hookdoc import hook_names
from noa.plugin_sdk import (
    DriverSlot,
    HostedPlugins,
    PluginConfig,
    PluginInfo,
    Registry,
    hookimpl,
)

REGISTRATION_HOOKS = [
    # (hook, its registrar argument)
    ("noa_register_auth_schemes", "schemes"),
    ("noa_register_migrations", "migrations"),
    ("noa_register_model_families", "families"),
    ("noa_register_embedders", "embedders"),
    ("noa_register_task_types", "task_types"),
    ("noa_register_providers", "providers"),
    ("noa_register_event_listeners", "listeners"),
    ("noa_register_commands", "commands"),
    ("noa_register_routes", "routes"),
    ("noa_register_middleware", "middleware"),
    ("noa_register_grpc_services", "services"),
    ("noa_register_health_checks", "checks"),
    ("noa_register_hosted_plugins", "hosted"),
    ("noa_register_driver_slots", "slots"),
    ("noa_register_config_sections", "sections"),
]


def test_every_registration_hook_is_listed_here() -> None:
    assert sorted(h for h, _ in REGISTRATION_HOOKS) == sorted(
        h for h in hook_names() if h.startswith("noa_register_")
    )


def item_for(hook: str, name: str) -> Any:
    """A valid contribution: boot itself consumes config sections, driver slots and
    hosted plugin kinds."""
    if hook == "noa_register_config_sections":
        return type(f"{name.title()}Config", (PluginConfig,), {}, frozen=True)
    if hook == "noa_register_driver_slots":
        return DriverSlot(description=f"slot of {name}")
    if hook == "noa_register_hosted_plugins":
        return HostedPlugins(list_plugins=list)
    return name


def contributor(name: str, hook: str, arg: str, after: tuple[str, ...] = ()) -> types.ModuleType:
    module = types.ModuleType(name)
    namespace: dict[str, Any] = {"ITEM": item_for(hook, name)}
    exec(  # a real function with the hook's own name and argument name, as a plugin has
        f"def {hook}({arg}):\n    {arg}.add('{name}-item', ITEM)\n", namespace
    )
    setattr(module, hook, hookimpl(namespace[hook]))
    module.ITEM = namespace["ITEM"]  # type: ignore[attr-defined]
    module.PLUGIN_INFO = PluginInfo(after=after)  # type: ignore[attr-defined]
    return module


@pytest.mark.parametrize(("hook", "arg"), REGISTRATION_HOOKS)
def test_registration_hook_collects_in_plugin_order(tmp_path: Path, hook: str, arg: str) -> None:
    extra = {
        "zeta": contributor("zeta", hook, arg),
        "alpha": contributor("alpha", hook, arg, after=("zeta",)),
    }
    kernel = Kernel.boot(
        BootOptions(config_dir=str(tmp_path), overrides=(("plugins.autoload", False, "test"),)),
        environ={},
        extra_plugins=extra,
    )
    registry = kernel.collect(hook, Registry[Any]("thing"))
    assert [(c.name, c.plugin) for c in registry.contributions()] == [
        ("zeta-item", "zeta"),
        ("alpha-item", "alpha"),
    ]
    assert [c.item for c in registry.contributions()] == [extra["zeta"].ITEM, extra["alpha"].ITEM]  # type: ignore[attr-defined]
