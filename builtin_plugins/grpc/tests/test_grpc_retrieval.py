"""``noa.v1.RetrievalService`` over gRPC answers as ``/v1/collections`` and ``/v1/search``
do, on the same collections: what one transport writes the other reads."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from noa.builtin_plugins.storage.config import StorageConfig
from noa.builtin_plugins.storage.migrate import Migrator, make_engine
from noa.plugin_sdk.testing import boot
from noa.proto.v1 import retrieval_pb2 as pb
from noa.proto.v1 import retrieval_pb2_grpc as pb_grpc

from .conftest import grpc_port

PLUGINS = ["http", "observability", "storage", "inference", "retrieval", "grpc"]


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


@pytest.fixture
async def server(tmp_path: Path, model_repository: Path) -> Any:
    data_dir = str(tmp_path / "data")
    apps = {"retrieval": "noa.builtin_plugins.retrieval.piccolo_app"}
    await Migrator(make_engine("sqlite", StorageConfig(), data_dir), apps).apply()
    config = {
        "server": {"data_dir": data_dir},
        "inference": {"repository": str(model_repository)},
        "grpc": {"enabled": True, "port": 0},
    }
    async with boot(PLUGINS, config=config) as kernel:
        for _ in range(1200):
            if (await kernel.client.get("/ready")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        yield kernel


async def test_collections_ingestion_and_search_over_grpc(server: Any, channel_to: Any) -> None:
    stub = pb_grpc.RetrievalServiceStub(channel_to(grpc_port(server)))
    spec = {"name": "pets-v1", "alias": "pets", "fields": {"kind": "keyword"}}
    created = await stub.CreateCollection(pb.CreateCollectionRequest(collection=struct(spec)))
    assert created.name == "pets-v1"
    with pytest.raises(grpc.aio.AioRpcError) as taken:
        await stub.CreateCollection(pb.CreateCollectionRequest(collection=struct(spec)))
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    documents = [
        pb.Document(
            id="cat", text="Cats purr and sleep all day.", metadata=struct({"kind": "cat"})
        ),
        pb.Document(id="dog", text="Dogs bark at the postman.", metadata=struct({"kind": "dog"})),
    ]
    report = await stub.IngestDocuments(
        pb.IngestDocumentsRequest(collection="pets", documents=documents), timeout=60
    )
    assert report.report["ingested"] == 2
    listed = await stub.ListCollections(pb.ListCollectionsRequest())
    assert [c.name for c in listed.collections] == ["pets-v1"]

    query = {"collection": "pets", "text": "which animal barks?", "top_k": 1}
    answer = await stub.Search(pb.SearchRequest(**query), timeout=60)
    rest = (await server.client.post("/v1/search", json=query)).json()
    assert answer.collection == rest["collection"] == "pets-v1"
    assert [h.document_id for h in answer.hits] == [h["document_id"] for h in rest["hits"]]
    assert answer.hits[0].document_id == "dog"
    assert answer.hits[0].score == pytest.approx(rest["hits"][0]["score"], abs=1e-6)
    filtered = await stub.Search(
        pb.SearchRequest(collection="pets", text="barks", filter=struct({"kind": "cat"}))
    )
    assert [h.document_id for h in filtered.hits] == ["cat"]

    for request, code in (
        (pb.SearchRequest(collection="nothing", text="x"), grpc.StatusCode.NOT_FOUND),
        (pb.SearchRequest(collection="pets", vector=[0.5, 0.5]), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.SearchRequest(collection="", text="x"), grpc.StatusCode.INVALID_ARGUMENT),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Search(request)
        assert caught.value.code() == code, caught.value.details()
