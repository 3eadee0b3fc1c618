"""The plugin passes the generic plugin contract, with no WASM plugin and with one."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from noa.plugin_sdk.testing.contracts import PluginContract


class TestWasmPluginContract(PluginContract):
    plugin = "wasm"


class TestWasmPluginContractWithAPlugin(PluginContract):
    plugin = "wasm"

    @pytest.fixture(autouse=True)
    def _plugin(self, tmp_path: Path, wat: ModuleType) -> None:
        folder = tmp_path / "wasm" / "echo"
        folder.mkdir(parents=True)
        (folder / "wasm.toml").write_text(
            'name = "echo"\nversion = "1.0.0"\nmodule = "echo.wat"\n[entries.run]\n'
        )
        (folder / "echo.wat").write_text(wat.ECHO)
        self.config = {
            "server": {"data_dir": str(tmp_path / "data")},
            "wasm": {"plugin_dir": str(tmp_path / "wasm")},
        }
