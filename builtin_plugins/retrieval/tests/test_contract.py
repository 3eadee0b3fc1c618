"""The embedded driver passes the SDK's vector store contract, on both search paths;
the plugin passes the plugin contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from noa.builtin_plugins.retrieval.config import RetrievalConfig
from noa.builtin_plugins.retrieval.embedded import EmbeddedVectorStore
from noa.plugin_sdk.ports.vectors import VectorStorePort
from noa.plugin_sdk.testing.contracts import PluginContract, VectorStoreContract
from noa.plugin_sdk.testing.harness import boot_kernel


class TestEmbeddedDriver(VectorStoreContract):
    exact_max_values = RetrievalConfig().embedded_exact_max_values

    @pytest.fixture(autouse=True)
    def _folder(self, tmp_path: Path) -> None:
        self.folder = tmp_path / "vectors"

    async def make_driver(self) -> VectorStorePort:
        store = EmbeddedVectorStore(self.folder, exact_max_values=self.exact_max_values)
        await store.start()
        return store

    async def reopen_driver(self, driver: VectorStorePort) -> VectorStorePort:
        assert isinstance(driver, EmbeddedVectorStore)
        return await self.make_driver()


class TestEmbeddedDriverInt8Pass(TestEmbeddedDriver):
    """Every search takes the int8 first pass, which large collections use: the
    float64 rescoring of its candidates still gives brute force's exact top k."""

    exact_max_values = 0


class TestRetrievalPluginContract(PluginContract):
    plugin = "retrieval"
    needs = ("storage",)

    @pytest.fixture(autouse=True)
    def _data_dir(self, tmp_path: Path) -> None:
        self.config: dict[str, Any] = {"server": {"data_dir": str(tmp_path)}}


def test_the_kernel_loads_it_as_the_embedded_profiles_vectors_driver(tmp_path: Path) -> None:
    kernel = boot_kernel(["http", "retrieval"], config={"server": {"data_dir": str(tmp_path)}})
    assert kernel.config_value("drivers.vectors") == "embedded"
    driver = kernel.driver("vectors")
    assert driver is EmbeddedVectorStore
    store = driver.from_config(kernel.section("retrieval", RetrievalConfig), str(tmp_path))
    assert store.path == tmp_path / "vectors"
    custom = RetrievalConfig(embedded_path=str(tmp_path / "elsewhere"), embedded_exact_max_values=7)
    store = driver.from_config(custom, str(tmp_path))
    assert (store.path, store.exact_max_values) == (tmp_path / "elsewhere", 7)
