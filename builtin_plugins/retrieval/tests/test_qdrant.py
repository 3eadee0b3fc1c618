"""The qdrant drivers: ``qdrant-local`` passes the SDK's vector store contract; the
server driver is built from config and fails clearly when no server answers (no Qdrant
server runs in these tests, and none is faked)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from noa.builtin_plugins.retrieval.config import RetrievalConfig
from noa.builtin_plugins.retrieval.qdrant_driver import (
    ID_KEY,
    QdrantLocalStore,
    QdrantServerStore,
)
from noa.plugin_sdk.config import Secret
from noa.plugin_sdk.errors import PluginStartError, ServiceUnavailable, Unprocessable
from noa.plugin_sdk.ports.vectors import Point, VectorStorePort
from noa.plugin_sdk.testing.contracts import VectorStoreContract
from noa.plugin_sdk.testing.harness import boot_kernel


class TestQdrantLocalDriver(VectorStoreContract):
    @pytest.fixture(autouse=True)
    def _folder(self, tmp_path: Path) -> None:
        self.folder = tmp_path / "qdrant"

    async def make_driver(self) -> VectorStorePort:
        store = QdrantLocalStore(self.folder)
        await store.start()
        return store

    async def reopen_driver(self, driver: VectorStorePort) -> VectorStorePort:
        assert isinstance(driver, QdrantLocalStore)
        return await self.make_driver()


async def test_local_store_keeps_ids_out_of_payloads(tmp_path: Path) -> None:
    store = QdrantLocalStore(tmp_path)
    try:
        await store.create_collection("c", 2, "dot", {"n": "integer"})
        with pytest.raises(Unprocessable) as caught:
            await store.upsert("c", [Point(id="x", vector=[1.0, 0.0], payload={ID_KEY: "y"})])
        assert repr(ID_KEY) in str(caught.value)
        await store.upsert("c", [Point(id="x", vector=[1.0, 0.0], payload={"n": 1})])
        (hit,) = await store.search("c", [1.0, 0.0], 5, filter={"n": 1.0})
        assert (hit.id, hit.payload) == ("x", {"n": 1})
        assert await store.search("c", [1.0, 0.0], 5, filter={"n": 1.5}) == []
    finally:
        await store.close()


async def test_local_store_serves_one_process_at_a_time(tmp_path: Path) -> None:
    first = QdrantLocalStore(tmp_path)
    await first.start()
    second = QdrantLocalStore(tmp_path)
    try:
        with pytest.raises(PluginStartError, match="in use by another process"):
            await second.start()
    finally:
        await second.close()
        await first.close()


def test_both_drivers_load_by_name_and_read_their_config(tmp_path: Path) -> None:
    kernel = boot_kernel(
        ["http", "retrieval"],
        config={"server": {"data_dir": str(tmp_path)}, "drivers": {"vectors": "qdrant-local"}},
    )
    local = kernel.driver("vectors")
    assert local is QdrantLocalStore
    config = kernel.section("retrieval", RetrievalConfig)
    assert local.from_config(config, str(tmp_path)).path == tmp_path / "qdrant"
    custom = RetrievalConfig(qdrant_path=str(tmp_path / "elsewhere"))
    assert QdrantLocalStore.from_config(custom, str(tmp_path)).path == tmp_path / "elsewhere"

    server = QdrantServerStore.from_config(
        RetrievalConfig(
            qdrant_url=Secret("https://qdrant.example:6333"),
            qdrant_api_key=Secret("k3y"),
            qdrant_timeout_s=3,
        ),
        str(tmp_path),
    )
    assert (server.url, server.timeout_s) == ("https://qdrant.example:6333", 3)
    assert "k3y" not in repr(RetrievalConfig(qdrant_api_key=Secret("k3y")))


def test_the_kernel_loads_the_server_driver_by_name(tmp_path: Path) -> None:
    kernel = boot_kernel(
        ["http", "retrieval"],
        config={"server": {"data_dir": str(tmp_path)}, "drivers": {"vectors": "qdrant"}},
    )
    assert kernel.driver("vectors") is QdrantServerStore


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_unreachable_server_is_service_unavailable_naming_the_url() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    store = QdrantServerStore(url, "secret-key", timeout_s=2)
    try:
        with pytest.raises(ServiceUnavailable) as caught:
            await store.create_collection("c", 4, "cosine")
        assert url in str(caught.value)
        assert "secret-key" not in str(caught.value)
        with pytest.raises(ServiceUnavailable, match="unreachable"):
            await store.search("c", [1.0, 0.0, 0.0, 0.0], 3)
        assert await store.ping() is False
    finally:
        await store.close()
    assert await store.ping() is False


async def test_credentials_in_the_url_stay_out_of_errors() -> None:
    port = _closed_port()
    store = QdrantServerStore(f"http://user:pw@127.0.0.1:{port}", timeout_s=2)
    try:
        with pytest.raises(ServiceUnavailable) as caught:
            await store.list_collections()
        assert f"http://127.0.0.1:{port}" in str(caught.value)
        assert "pw" not in str(caught.value)
    finally:
        await store.close()
