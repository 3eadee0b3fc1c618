"""``noa.v1.RetrievalService``: search, collections and ingestion over gRPC.

Each method calls what its REST route calls (:class:`Retrieval`) and checks its input
with the same msgspec types (``SearchRequest``, ``NewCollection``, ``Document``), so
answers and errors are the same; free-form JSON (filters, metadata, collection details)
travels as ``google.protobuf.Struct``. Scopes as REST: ``retrieval:search`` to search,
``retrieval:write`` to ingest, ``retrieval:admin`` for collections.
"""

from __future__ import annotations

from typing import Any

import msgspec
from google.protobuf import json_format, struct_pb2
from noa.builtin_plugins.retrieval.api import ADMIN, SEARCH, WRITE, SearchRequest
from noa.builtin_plugins.retrieval.service import Document, NewCollection, Retrieval
from noa.plugin_sdk import GrpcService
from noa.proto.v1 import retrieval_pb2 as pb
from noa.proto.v1 import retrieval_pb2_grpc as pb_grpc

__all__ = ["grpc_service"]


def _struct(value: Any) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(msgspec.to_builtins(value))
    return out


def _dict(message: Any, field: str) -> dict[str, Any] | None:
    if not message.HasField(field):
        return None
    return dict(json_format.MessageToDict(getattr(message, field)))


def _collection(view: Any) -> Any:
    detail = msgspec.to_builtins(view)
    return pb.Collection(name=detail["name"], detail=_struct(detail))


class RetrievalServicer(pb_grpc.RetrievalServiceServicer):
    def __init__(self, service: Retrieval) -> None:
        self.service = service

    async def Search(self, request: Any, context: Any) -> Any:
        query = msgspec.convert(
            {
                "collection": request.collection,
                "text": request.text if request.HasField("text") else None,
                "vector": list(request.vector) or None,
                "top_k": request.top_k if request.HasField("top_k") else 10,
                "filter": _dict(request, "filter"),
                "score_threshold": (
                    request.score_threshold if request.HasField("score_threshold") else None
                ),
            },
            SearchRequest,
        )
        record, hits = await self.service.search(
            query.collection,
            text=query.text,
            vector=query.vector,
            top_k=query.top_k,
            filter=query.filter,
            score_threshold=query.score_threshold,
        )
        return pb.SearchResponse(
            collection=record.name,
            model=record.model,
            hits=[
                pb.Hit(
                    id=h.id,
                    score=h.score,
                    text=h.text,
                    document_id=h.document_id,
                    chunk=h.chunk,
                    metadata=_struct(h.metadata),
                )
                for h in hits
            ],
        )

    async def ListCollections(self, request: Any, context: Any) -> Any:
        views = await self.service.collections()
        return pb.ListCollectionsResponse(collections=[_collection(v) for v in views])

    async def GetCollection(self, request: Any, context: Any) -> Any:
        return _collection(await self.service.collection(request.name))

    async def CreateCollection(self, request: Any, context: Any) -> Any:
        spec = msgspec.convert(_dict(request, "collection") or {}, NewCollection)
        return _collection(await self.service.create_collection(spec))

    async def DeleteCollection(self, request: Any, context: Any) -> Any:
        await self.service.delete_collection(request.name)
        return pb.DeleteCollectionResponse()

    async def IngestDocuments(self, request: Any, context: Any) -> Any:
        documents = [
            msgspec.convert(
                {"id": d.id, "text": d.text, "metadata": _dict(d, "metadata") or {}}, Document
            )
            for d in request.documents
        ]
        report = await self.service.ingest(request.collection, documents)
        return pb.IngestReport(report=_struct(report))


def grpc_service(service: Retrieval) -> GrpcService:
    return GrpcService(
        name="noa.v1.RetrievalService",
        servicer=RetrievalServicer(service),
        add_to_server=pb_grpc.add_RetrievalServiceServicer_to_server,
        scopes={"Search": SEARCH, "IngestDocuments": WRITE},
        scope=ADMIN,
        group="retrieval",
        health_checks=("vectors",),
    )
