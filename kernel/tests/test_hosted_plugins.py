"""Guest plugins that a plugin hosts (``noa_register_hosted_plugins``) are listed after
the Python plugins, marked with their kind and host, as they are when the list is read."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest
from noa.kernel import BootOptions, Kernel
from noa.kernel.cli._tables import render_plugins
from noa.plugin_sdk import (
    HostedPlugins,
    PluginLoadError,
    PluginRecord,
    RegistrationError,
    Registry,
    hookimpl,
)


def guest(name: str, **fields: Any) -> PluginRecord:
    row: dict[str, Any] = {
        "version": "1.0",
        "distribution": "",
        "entry_point": f"/plugins/{name}",
        "enabled": True,
        "optional": True,
        "state": "loaded",
    }
    return PluginRecord(name=name, **{**row, **fields})


def hosting_plugin(catalog: list[PluginRecord], kind: str = "toy") -> types.ModuleType:
    """A plugin hosting guests of ``kind``: it lists ``catalog`` as it is at each read."""
    module = types.ModuleType("toyhost")

    @hookimpl
    def noa_configure(host: Any) -> None:
        host.state["toy.catalog"] = catalog

    @hookimpl
    def noa_register_hosted_plugins(hosted: Registry[HostedPlugins], host: Any) -> None:
        rows = host.state["toy.catalog"]
        hosted.add(kind, HostedPlugins(list_plugins=lambda: list(rows)))

    module.noa_configure = noa_configure  # type: ignore[attr-defined]
    module.noa_register_hosted_plugins = noa_register_hosted_plugins  # type: ignore[attr-defined]
    return module


def boot(tmp_path: Path, **extra: object) -> Kernel:
    """A kernel with only ``extra`` enabled (the installed plugins are listed disabled)."""
    return Kernel.boot(
        BootOptions(config_dir=str(tmp_path), overrides=(("plugins.autoload", False, "test"),)),
        environ={},
        extra_plugins=extra,
    )


def test_guests_follow_the_python_plugins_marked_with_kind_and_host(tmp_path: Path) -> None:
    # A host can't pass its guests off as Python plugins or as another's: the kernel marks them.
    catalog = [guest("adder", kind="python", hosted_by="someone-else")]
    kernel = boot(tmp_path, toyhost=hosting_plugin(catalog), plain=types.ModuleType("plain"))
    rows = [r for r in kernel.plugins() if r.enabled]
    assert [(r.name, r.kind, r.hosted_by) for r in rows] == [
        ("plain", "python", None),
        ("toyhost", "python", None),
        ("adder", "toy", "toyhost"),
    ]
    # Read at each call: what the host lists now.
    catalog.append(guest("broken", state="failed", error="toy_invalid: bad manifest"))
    assert [(r.name, r.state) for r in kernel.plugins() if r.hosted_by] == [
        ("adder", "loaded"),
        ("broken", "failed"),
    ]
    table = render_plugins(kernel.plugins())
    assert table.splitlines()[0].split() == [
        "NAME",
        "KIND",
        "VERSION",
        "DISTRIBUTION",
        "ENABLED",
        "STATE",
        "HOOKS",
    ]
    adder = next(line for line in table.splitlines() if line.startswith("adder "))
    assert "toy (via toyhost)" in adder
    assert "  broken (toy): toy_invalid: bad manifest" in table


def test_a_failing_lister_gives_one_failed_row_and_the_list_still_answers(
    tmp_path: Path,
) -> None:
    module = types.ModuleType("flaky")

    def boom() -> list[PluginRecord]:
        raise OSError("catalog unreadable")

    @hookimpl
    def noa_register_hosted_plugins(hosted: Registry[HostedPlugins]) -> None:
        hosted.add("flake", HostedPlugins(list_plugins=boom))

    module.noa_register_hosted_plugins = noa_register_hosted_plugins  # type: ignore[attr-defined]
    rows = [r for r in boot(tmp_path, flaky=module).plugins() if r.enabled]
    assert [(r.name, r.kind, r.hosted_by, r.state) for r in rows] == [
        ("flaky", "python", None, "loaded"),
        ("flake", "flake", "flaky", "failed"),
    ]
    assert rows[1].error == "listing failed: OSError: catalog unreadable"


def test_a_contribution_that_is_not_hosted_plugins_names_the_plugin(tmp_path: Path) -> None:
    module = types.ModuleType("sloppy")

    @hookimpl
    def noa_register_hosted_plugins(hosted: Registry[Any]) -> None:
        hosted.add("toy", ["adder"])

    module.noa_register_hosted_plugins = noa_register_hosted_plugins  # type: ignore[attr-defined]
    with pytest.raises(PluginLoadError) as caught:
        boot(tmp_path, sloppy=module)
    assert caught.value.plugin == "sloppy"
    assert "not a noa.plugin_sdk.HostedPlugins" in str(caught.value)


def test_two_plugins_hosting_the_same_kind_is_refused(tmp_path: Path) -> None:
    first, second = hosting_plugin([]), hosting_plugin([])
    with pytest.raises(
        RegistrationError, match=r"hosted plugin kind 'toy' from plugin 'b'.*by plugin 'a'"
    ):
        boot(tmp_path, a=first, b=second)
