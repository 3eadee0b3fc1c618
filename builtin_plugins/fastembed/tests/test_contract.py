"""The plugin passes the generic plugin contract, with no model and with one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from noa.plugin_sdk.testing.contracts import PluginContract


class TestFastembedPluginContract(PluginContract):
    plugin = "fastembed"


class TestFastembedPluginContractWithAModel(PluginContract):
    plugin = "fastembed"

    @pytest.fixture(autouse=True)
    def _model(self, onnx_dir: Path) -> None:
        self.config: dict[str, Any] = {"fastembed": {"models": {"minilm": str(onnx_dir)}}}
