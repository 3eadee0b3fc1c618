"""Plugin discovery, enabling, ordering, failures and lifecycle, with real entry points."""

from __future__ import annotations

import random
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from noa.kernel import BootOptions, Kernel
from noa.kernel.plugins import order_plugins
from noa.plugin_sdk import (
    CheckResult,
    HealthCheck,
    PluginInfo,
    PluginLoadError,
    PluginStartError,
    Registry,
    hookimpl,
)


def boot(
    tmp_path: Path, *settings: tuple[str, Any], extra: dict[str, object] | None = None
) -> Kernel:
    overrides = tuple((key, value, f"test {key}") for key, value in settings)
    return Kernel.boot(
        BootOptions(config_dir=str(tmp_path), overrides=overrides), environ={}, extra_plugins=extra
    )


def plugin(name: str, events: list[str], **hooks: Any) -> types.ModuleType:
    """A plugin module whose startup/shutdown append to ``events``."""
    module = types.ModuleType(name)

    @hookimpl
    def noa_startup(host: Any) -> None:
        events.append(f"start {name}")

    @hookimpl
    async def noa_shutdown(host: Any) -> None:
        events.append(f"stop {name}")

    module.noa_startup = noa_startup  # type: ignore[attr-defined]
    module.noa_shutdown = noa_shutdown  # type: ignore[attr-defined]
    for key, value in hooks.items():
        setattr(module, key, value)
    return module


def test_order_follows_config_then_name_then_declared_constraints() -> None:
    infos = {
        "a": PluginInfo(),
        "b": PluginInfo(after=("d",)),
        "c": PluginInfo(before=("a",)),
        "d": PluginInfo(),
        "e": PluginInfo(requires=("x",)),  # x absent: ordering ignores it
    }
    names = list(infos)
    for _ in range(20):
        random.shuffle(names)  # discovery order must not matter
        assert order_plugins(names, ["d", "b"], infos) == ["d", "b", "c", "a", "e"]


def test_order_cycle_names_the_plugins_in_it() -> None:
    infos = {"a": PluginInfo(after=("b",)), "b": PluginInfo(after=("a",)), "c": PluginInfo()}
    with pytest.raises(PluginLoadError, match="cycle among a, b"):
        order_plugins(["a", "b", "c"], [], infos)


async def test_startup_in_order_and_shutdown_in_reverse(tmp_path: Path) -> None:
    events: list[str] = []
    extra = {
        "first": plugin("first", events),
        "second": plugin("second", events, PLUGIN_INFO=PluginInfo(after=("first",))),
        "third": plugin("third", events),
    }
    kernel = boot(tmp_path, ("plugins.autoload", False), ("plugins.order", ["third"]), extra=extra)
    await kernel.startup()
    await kernel.shutdown()
    assert events == [
        "start third",
        "start first",
        "start second",
        "stop second",
        "stop first",
        "stop third",
    ]


async def test_failed_startup_stops_what_started_and_names_the_plugin(tmp_path: Path) -> None:
    events: list[str] = []

    @hookimpl
    def noa_startup(host: Any) -> None:
        raise ConnectionError("database unreachable")

    broken = types.ModuleType("broken")
    broken.noa_startup = noa_startup  # type: ignore[attr-defined]
    extra = {"a_ok": plugin("a_ok", events), "broken": broken, "z_never": plugin("z_never", events)}
    kernel = boot(tmp_path, ("plugins.autoload", False), extra=extra)
    with pytest.raises(PluginStartError) as caught:
        await kernel.startup()
    assert caught.value.plugin == "broken"
    assert "ConnectionError: database unreachable" in str(caught.value)
    assert events == ["start a_ok", "stop a_ok"]


async def test_optional_plugin_failing_to_start_is_reported_not_fatal(tmp_path: Path) -> None:
    @hookimpl
    def noa_startup(host: Any) -> None:
        raise ConnectionError("no GPU")

    broken = types.ModuleType("broken")
    broken.noa_startup = noa_startup  # type: ignore[attr-defined]
    kernel = boot(
        tmp_path,
        ("plugins.autoload", False),
        ("plugins.optional", ["broken"]),
        extra={"broken": broken},
    )
    await kernel.startup()
    row = next(r for r in kernel.plugins() if r.name == "broken")
    assert (row.state, row.optional) == ("failed", True)
    assert row.error is not None and "no GPU" in row.error
    await kernel.shutdown()


def test_plugin_that_fails_to_import_is_named_with_its_cause(
    tmp_path: Path, installed: Any
) -> None:
    installed(
        "noa-plugin-broken",
        {"noa.plugins": {"broken": "broken_plugin_mod"}},
        {"broken_plugin_mod": "import module_that_does_not_exist\n"},
    )
    with pytest.raises(PluginLoadError) as caught:
        boot(tmp_path)
    assert caught.value.plugin == "broken"
    assert "ModuleNotFoundError" in str(caught.value)
    assert "module_that_does_not_exist" in str(caught.value)

    kernel = boot(tmp_path, ("plugins.optional", ["broken"]))
    row = next(r for r in kernel.plugins() if r.name == "broken")
    assert (row.state, row.distribution, row.version) == ("failed", "noa-plugin-broken", "0.1.0")
    assert "broken" not in [p.name for p in kernel.plugin_set.loaded]


def test_disabled_plugin_is_not_imported(tmp_path: Path, installed: Any) -> None:
    installed(
        "noa-plugin-heavy",
        {"noa.plugins": {"heavy": "heavy_plugin_mod"}},
        {"heavy_plugin_mod": "raise SystemError('imported although disabled')\n"},
    )
    kernel = boot(tmp_path, ("plugins.disable", ["heavy"]))
    assert "heavy_plugin_mod" not in sys.modules
    row = next(r for r in kernel.plugins() if r.name == "heavy")
    assert (row.enabled, row.state) == (False, "disabled")


def test_without_autoload_only_enabled_plugins_load(tmp_path: Path, installed: Any) -> None:
    installed(
        "noa-plugin-extra",
        {"noa.plugins": {"extra": "extra_plugin_mod"}},
        {"extra_plugin_mod": ""},
    )
    kernel = boot(tmp_path, ("plugins.autoload", False), ("plugins.enable", ["extra"]))
    assert [p.name for p in kernel.plugin_set.loaded] == ["extra"]


def test_enabled_but_not_installed_plugin_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PluginLoadError, match="not installed"):
        boot(tmp_path, ("plugins.enable", ["no_such_plugin"]))


def test_misspelt_hook_is_refused(tmp_path: Path) -> None:
    module = types.ModuleType("typo")

    @hookimpl
    def noa_startpu(host: Any) -> None:  # misspelt on purpose
        return None

    module.noa_startpu = noa_startpu  # type: ignore[attr-defined]
    with pytest.raises(PluginLoadError, match=r"unknown hook.*noa_startpu"):
        boot(tmp_path, ("plugins.autoload", False), extra={"typo": module})


def test_missing_required_plugin_is_an_error(tmp_path: Path) -> None:
    module = types.ModuleType("needy")
    module.PLUGIN_INFO = PluginInfo(requires=("storage_postgres",))  # type: ignore[attr-defined]
    with pytest.raises(PluginLoadError, match=r"requires plugin.*storage_postgres"):
        boot(tmp_path, ("plugins.autoload", False), extra={"needy": module})


def test_registrar_records_contributor_and_refuses_duplicates(tmp_path: Path) -> None:
    def contributing(name: str) -> types.ModuleType:
        module = types.ModuleType(name)

        @hookimpl
        def noa_register_task_types(task_types: Registry[Any]) -> None:
            task_types.add("embed", name)

        module.noa_register_task_types = noa_register_task_types  # type: ignore[attr-defined]
        return module

    kernel = boot(tmp_path, ("plugins.autoload", False), extra={"one": contributing("one")})
    registry = kernel.collect("noa_register_task_types", Registry[Any]("task type"))
    assert [(c.name, c.plugin, c.item) for c in registry.contributions()] == [
        ("embed", "one", "one")
    ]

    kernel = boot(
        tmp_path,
        ("plugins.autoload", False),
        extra={"one": contributing("one"), "two": contributing("two")},
    )
    with pytest.raises(
        Exception, match="task type 'embed' from plugin 'two' is already registered by plugin 'one'"
    ):
        kernel.collect("noa_register_task_types", Registry[Any]("task type"))


async def test_readiness_reports_each_component(tmp_path: Path) -> None:
    async def ok() -> None:
        return None

    async def failing() -> CheckResult:
        return CheckResult(status="failing", detail="connection refused")

    async def slow() -> None:
        import asyncio

        await asyncio.sleep(5)

    async def degraded() -> CheckResult:
        return CheckResult(status="degraded", detail="replica lag")

    def checks_plugin(**contributed: HealthCheck) -> types.ModuleType:
        module = types.ModuleType("checks")

        @hookimpl
        def noa_register_health_checks(checks: Registry[HealthCheck]) -> None:
            for name, check in contributed.items():
                checks.add(name, check)

        module.noa_register_health_checks = noa_register_health_checks  # type: ignore[attr-defined]
        return module

    kernel = boot(
        tmp_path,
        ("plugins.autoload", False),
        extra={
            "c": checks_plugin(
                ok=HealthCheck(check=ok), cache=HealthCheck(check=degraded, critical=False)
            )
        },
    )
    report = await kernel.readiness()
    assert (report.ready, report.status) == (False, "not_ready")  # not started yet
    await kernel.startup()
    report = await kernel.readiness()
    assert (report.ready, report.status) == (True, "degraded")
    await kernel.shutdown()

    kernel = boot(
        tmp_path,
        ("plugins.autoload", False),
        extra={
            "c": checks_plugin(
                db=HealthCheck(check=failing), queue=HealthCheck(check=slow, timeout_s=0.1)
            )
        },
    )
    await kernel.startup()
    report = await kernel.readiness()
    assert (report.ready, report.status) == (False, "not_ready")
    by_name = {c.name: c for c in report.components}
    assert by_name["db"].detail == "connection refused"
    assert (by_name["queue"].status, by_name["queue"].detail) == (
        "failing",
        "no answer within 0.1 s",
    )
    assert by_name["db"].plugin == "c"
    await kernel.shutdown()


def test_configure_runs_once_per_plugin_in_order_with_the_host(tmp_path: Path) -> None:
    seen: list[tuple[str, str, int]] = []

    def configuring(name: str) -> types.ModuleType:
        module = types.ModuleType(name)

        @hookimpl
        def noa_configure(host: Any) -> None:
            host.state.setdefault("order", []).append(name)
            seen.append((name, host.profile, host.server.port))

        module.noa_configure = noa_configure  # type: ignore[attr-defined]
        return module

    kernel = boot(
        tmp_path,
        ("plugins.autoload", False),
        ("plugins.order", ["b", "a"]),
        ("server.port", 9999),
        extra={"a": configuring("a"), "b": configuring("b")},
    )
    assert seen == [("b", "embedded", 9999), ("a", "embedded", 9999)]
    assert kernel.state["order"] == ["b", "a"]


def test_configure_failure_names_the_plugin(tmp_path: Path) -> None:
    module = types.ModuleType("bad")

    @hookimpl
    def noa_configure(host: Any) -> None:
        raise ValueError("model directory missing")

    module.noa_configure = noa_configure  # type: ignore[attr-defined]
    with pytest.raises(PluginLoadError) as caught:
        boot(tmp_path, ("plugins.autoload", False), extra={"bad": module})
    assert caught.value.plugin == "bad"
    assert "noa_configure failed: ValueError: model directory missing" in str(caught.value)
