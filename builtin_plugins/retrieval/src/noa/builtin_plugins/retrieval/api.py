"""The retrieval API: ``/v1/collections``, ``/v1/aliases`` and ``/v1/search``.

Scopes: ``retrieval:search`` to search, ``retrieval:write`` to ingest and delete
documents (also as background jobs), ``retrieval:admin`` for collections and aliases.
Routes naming a collection in their path also check the capability resource
``collection:<name>``.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import delete, get, post, put
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, JSONBody
from noa.builtin_plugins.retrieval.catalog import AliasChange
from noa.builtin_plugins.retrieval.jobs import IngestJobs, JobView
from noa.builtin_plugins.retrieval.service import (
    CollectionView,
    Document,
    Hit,
    IngestReport,
    NewCollection,
    Retrieval,
)
from noa.plugin_sdk.auth import RESOURCE_OPT, SCOPE_OPT

__all__ = ["retrieval_handlers"]

SEARCH, WRITE, ADMIN = "retrieval:search", "retrieval:write", "retrieval:admin"
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=63)]


def _resource(params: dict[str, Any]) -> str:
    return f"collection:{params['name']}"


class CollectionList(msgspec.Struct, kw_only=True):
    collections: list[CollectionView]


class AliasTarget(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    collection: Name


class AliasList(msgspec.Struct, kw_only=True):
    # alias -> collection
    aliases: dict[str, str]


class IngestRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    documents: Annotated[list[Document], msgspec.Meta(min_length=1)]


class SearchRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A query: ``text`` (embedded with the collection's model) or ``vector``."""

    # An alias or a collection name.
    collection: Name
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)] | None = None
    vector: list[float] | None = None
    top_k: int = 10
    # Conditions on declared fields: equality, {"any": [...]}, {"gte": .., "lt": ..}.
    filter: dict[str, Any] | None = None
    # cosine and dot: keep scores >= it; euclid: keep distances <= it.
    score_threshold: float | None = None


class SearchResponse(msgspec.Struct, kw_only=True):
    # The collection that answered (the alias's target at the time).
    collection: str
    model: str
    hits: list[Hit]


def retrieval_handlers(service: Retrieval, jobs: IngestJobs) -> list[HTTPRouteHandler]:
    admin = {SCOPE_OPT: ADMIN}
    admin_one = {SCOPE_OPT: ADMIN, RESOURCE_OPT: _resource}
    write_one = {SCOPE_OPT: WRITE, RESOURCE_OPT: _resource}
    tags = ["retrieval"]

    @post("/v1/collections", summary="Create a collection", tags=tags, status_code=201, opt=admin)
    async def create_collection(data: JSONBody[NewCollection]) -> CollectionView:
        """A new collection for the documents of one embedder and model (they fix its
        dimension), with the metadata fields searches filter on and how documents are
        chunked; ``alias`` also points a new alias at it. 409 when the name is taken by
        a collection or an alias."""
        return await service.create_collection(data)

    @get("/v1/collections", summary="List collections", tags=tags, opt=admin)
    async def list_collections() -> CollectionList:
        return CollectionList(collections=await service.collections())

    @get("/v1/collections/{name:str}", summary="Show a collection", tags=tags, opt=admin_one)
    async def show_collection(name: FromPath[str]) -> CollectionView:
        """The collection ``name`` means (an alias or a collection's own name)."""
        return await service.collection(name)

    @delete("/v1/collections/{name:str}", summary="Drop a collection", tags=tags, opt=admin_one)
    async def drop_collection(name: FromPath[str]) -> None:
        """Drop a collection and its points. 409 while an alias points to it: move the
        alias first (that is how an old collection is dropped after a re-index)."""
        await service.delete_collection(name)

    @post(
        "/v1/collections/{name:str}/documents",
        summary="Ingest documents",
        tags=tags,
        status_code=200,
        opt=write_one,
    )
    async def ingest(name: FromPath[str], data: JSONBody[IngestRequest]) -> IngestReport:
        """Chunk, embed and store documents (``retrieval.max_documents`` per call). A
        document already stored under its id is replaced; an unchanged one is skipped.
        Documents that can't be stored are listed under ``failed`` with the reason, and
        the others are stored."""
        return await service.ingest(name, data.documents)

    @delete(
        "/v1/collections/{name:str}/documents/{document_id:str}",
        summary="Delete a document",
        tags=tags,
        opt=write_one,
    )
    async def delete_document(name: FromPath[str], document_id: FromPath[str]) -> None:
        await service.delete_document(name, document_id)

    @post(
        "/v1/collections/{name:str}/ingest-jobs",
        summary="Ingest documents in the background",
        tags=tags,
        status_code=202,
        opt=write_one,
        request_max_body_size=service.config.max_job_bytes,
    )
    async def submit_job(name: FromPath[str], data: JSONBody[IngestRequest]) -> JobView:
        """Queue many documents (``retrieval.max_job_documents``, a body of up to
        ``retrieval.max_job_bytes``) for ingestion by the workers, through the broker.
        Answers once the job is stored: a crash doesn't lose it. Follow it with
        ``GET /v1/ingest-jobs/{id}`` or the ``retrieval.jobs.<id>`` events."""
        return await jobs.submit(name, data.documents)

    @get(
        "/v1/ingest-jobs/{job_id:str}",
        summary="Show an ingestion job",
        tags=tags,
        opt={SCOPE_OPT: WRITE},
    )
    async def show_job(job_id: FromPath[str]) -> JobView:
        """Progress (parts done of all) and the report: documents ingested, skipped
        (unchanged) and failed, with the first 1,000 failures and their reasons."""
        return await jobs.get(job_id)

    @get("/v1/aliases", summary="List aliases", tags=tags, opt=admin)
    async def list_aliases() -> AliasList:
        return AliasList(aliases=await service.catalog.aliases())

    @put("/v1/aliases/{name:str}", summary="Point an alias", tags=tags, opt=admin_one)
    async def set_alias(name: FromPath[str], data: JSONBody[AliasTarget]) -> AliasChange:
        """Create the alias or move it, atomically: searches running meanwhile go to the
        old collection or the new one, and none fails. The answer names the previous
        target, which can then be dropped."""
        return await service.set_alias(name, data.collection)

    @delete("/v1/aliases/{name:str}", summary="Delete an alias", tags=tags, opt=admin_one)
    async def delete_alias(name: FromPath[str]) -> None:
        await service.delete_alias(name)

    @post(
        "/v1/search",
        summary="Search a collection",
        tags=tags,
        status_code=200,
        opt={SCOPE_OPT: SEARCH},
    )
    async def search(data: JSONBody[SearchRequest]) -> SearchResponse:
        """The ``top_k`` chunks nearest a text or a vector, best first, with their text,
        document id and metadata. 404 for an unknown collection, 422 for a vector of the
        wrong dimension or a filter on a field the collection didn't declare."""
        record, hits = await service.search(
            data.collection,
            text=data.text,
            vector=data.vector,
            top_k=data.top_k,
            filter=data.filter,
            score_threshold=data.score_threshold,
        )
        return SearchResponse(collection=record.name, model=record.model, hits=hits)

    return [
        create_collection,
        list_collections,
        show_collection,
        drop_collection,
        ingest,
        delete_document,
        submit_job,
        show_job,
        list_aliases,
        set_alias,
        delete_alias,
        search,
    ]
