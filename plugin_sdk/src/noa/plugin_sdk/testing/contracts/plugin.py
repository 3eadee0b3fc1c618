"""The generic contract every NOA plugin passes, built-in or third-party.

Subclass it in the plugin's tests and name the plugin::

    class TestHelloContract(PluginContract):
        plugin = "hello"

The plugin must be installed (its entry point is what is tested).
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from typing import Any, ClassVar

import pytest
from noa.plugin_sdk.errors import ConfigError
from noa.plugin_sdk.registry import Registry
from noa.plugin_sdk.types import PluginInfo

__all__ = ["PluginContract"]

_PROBE = """
import logging, os, sys, threading
before_env = dict(os.environ)
before_threads = threading.active_count()
import importlib
importlib.import_module(sys.argv[1])
problems = []
if logging.getLogger().handlers:
    problems.append("added a root log handler")
if dict(os.environ) != before_env:
    problems.append("changed the environment")
if threading.active_count() != before_threads:
    problems.append("started a thread")
print("; ".join(problems))
"""


class PluginContract:
    #: The plugin's entry-point name in group ``noa.plugins``.
    plugin: ClassVar[str]
    #: Other plugins it needs to boot (``http`` is always added).
    needs: ClassVar[tuple[str, ...]] = ()
    #: Config applied when booting it alone (e.g. a service URL).
    config: ClassVar[dict[str, Any]] = {}

    def _entry_point(self) -> Any:
        found = [ep for ep in entry_points(group="noa.plugins") if ep.name == self.plugin]
        assert found, (
            f"no entry point {self.plugin!r} in group noa.plugins: is the plugin installed?"
        )
        return found[0]

    def test_entry_point_loads_and_declares_its_info(self) -> None:
        obj = self._entry_point().load()
        info = getattr(obj, "PLUGIN_INFO", None)
        assert isinstance(info, PluginInfo), "export PLUGIN_INFO = noa.plugin_sdk.PluginInfo(...)"
        assert info.description, "PLUGIN_INFO.description tells `noa plugins list` what it does"

    def test_importing_the_package_has_no_side_effects(self) -> None:
        package = self._entry_point().value.split(":")[0].rsplit(".", 1)[0]
        result = subprocess.run(
            [sys.executable, "-c", _PROBE, package], capture_output=True, text=True, check=True
        )
        assert result.stdout.strip() == "", f"importing {package}: {result.stdout.strip()}"

    async def test_boots_starts_and_stops_with_default_config(self) -> None:
        from noa.plugin_sdk.testing.harness import boot

        async with boot(["http", *self.needs, self.plugin], config=self.config) as noa:
            row = next(r for r in noa.kernel.plugins() if r.name == self.plugin)
            assert (row.state, row.error) == ("started", None)
            assert row.hooks, "a plugin implements at least one hook"
            ready = await noa.client.get("/ready")
            assert ready.status_code == 200, ready.text

    def test_config_sections_refuse_unknown_keys(self) -> None:
        from noa.plugin_sdk.testing.harness import boot_kernel

        kernel = boot_kernel(["http", *self.needs, self.plugin], config=self.config)
        sections = kernel.collect("noa_register_config_sections", Registry[Any]("config section"))
        mine = [c.name for c in sections.contributions() if c.plugin == self.plugin]
        for name in mine:
            with pytest.raises(ConfigError) as caught:
                boot_kernel(
                    ["http", *self.needs, self.plugin],
                    config={**self.config, name: {"surely_not_a_key": 1}},
                )
            assert caught.value.key == f"{name}.surely_not_a_key"
