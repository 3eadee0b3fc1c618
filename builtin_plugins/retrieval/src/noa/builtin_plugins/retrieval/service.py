"""Collections behind aliases, ingestion of documents and search: what the API calls.

A **collection** is physical: one collection of the vectors slot, created with an
embedder and model (which fix its dimension), a distance, declared metadata fields and a
chunking setting, all recorded in the catalog. Clients address it through an **alias**
(or its own name). Re-indexing is: create a new collection, ingest into it by name, then
move the alias with :meth:`Retrieval.set_alias`: one committed row update, so every
search resolves to the old collection or the new one, never to neither. A search whose
collection vanishes between resolving and searching (the old one dropped right after a
move) resolves again once.

A **document** (id, text, metadata) becomes chunks; chunk ``i`` is stored as point
``"<document id>#<i>"`` with payload ``{"text", "document_id", "chunk", "start", "end"}``
and the document's metadata beside them. Re-ingesting a document replaces its chunks
(the new ones are written, then the ones past the new count deleted) and a document whose
text and metadata haven't changed is skipped, by digest.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from noa.builtin_plugins.retrieval.catalog import (
    AliasChange,
    Catalog,
    CollectionRecord,
    DocumentRecord,
)
from noa.builtin_plugins.retrieval.chunking import Chunk, ChunkingConfig, chunk_text
from noa.builtin_plugins.retrieval.config import RetrievalConfig
from noa.plugin_sdk.embedding import Embedder
from noa.plugin_sdk.errors import (
    ApiError,
    BadRequest,
    Conflict,
    NotFound,
    ServiceUnavailable,
    Unprocessable,
)
from noa.plugin_sdk.ports.vectors import (
    COLLECTION_NAME_PATTERN,
    Distance,
    FieldType,
    Point,
    VectorStorePort,
    validate_fields,
    validate_payload,
)

__all__ = [
    "RESERVED_KEYS",
    "CollectionView",
    "Document",
    "Hit",
    "IngestFailure",
    "IngestReport",
    "NewCollection",
    "Retrieval",
]

DOCUMENT_FIELD = "document_id"
# Payload keys ingestion writes itself: metadata may not use them.
RESERVED_KEYS = frozenset({"text", DOCUMENT_FIELD, "chunk", "start", "end"})
MAX_DOCUMENT_ID = 256


class NewCollection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: str
    # Also create this alias pointing to the collection.
    alias: str | None = None
    # Empty: retrieval.default_embedder; its default model when model is empty.
    embedder: str = ""
    model: str = ""
    distance: Distance = "cosine"
    # Metadata fields searches can filter on, with their types.
    fields: dict[str, FieldType] = msgspec.field(default_factory=dict)
    chunking: ChunkingConfig | None = None


class CollectionView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    aliases: list[str]
    embedder: str
    model: str
    dim: int
    distance: Distance
    fields: dict[str, FieldType]
    chunking: ChunkingConfig
    points: int
    created_at: float


class Document(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    id: str
    text: str
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class IngestFailure(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    code: str
    message: str


class IngestReport(msgspec.Struct, kw_only=True):
    collection: str
    # Documents stored (new or changed), left as they were (unchanged), refused.
    ingested: int = 0
    skipped: int = 0
    failed: list[IngestFailure] = msgspec.field(default_factory=list)
    chunks: int = 0


class Hit(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    document_id: str
    score: float
    text: str
    metadata: dict[str, Any]
    chunk: int
    start: int
    end: int


class _Prepared(msgspec.Struct, kw_only=True):
    document: Document
    digest: str
    chunks: list[Chunk]
    previous: int


class Retrieval:
    """Built at configuration (the routes need it), started once the vector store, the
    catalog's storage and the embedders are there."""

    def __init__(self, config: RetrievalConfig) -> None:
        self.config = config
        self._vectors: VectorStorePort | None = None
        self._catalog: Catalog | None = None
        self.embedders: dict[str, Embedder] = {}

    def start(
        self, vectors: VectorStorePort, catalog: Catalog, embedders: Mapping[str, Embedder]
    ) -> None:
        self._vectors, self._catalog, self.embedders = vectors, catalog, dict(embedders)

    @property
    def vectors(self) -> VectorStorePort:
        if self._vectors is None:
            raise _not_started()
        return self._vectors

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            raise _not_started()
        return self._catalog

    # -- collections ------------------------------------------------------------------------

    async def create_collection(self, spec: NewCollection) -> CollectionView:
        for what, name in (("name", spec.name), ("alias", spec.alias)):
            if name is not None and not COLLECTION_NAME_PATTERN.fullmatch(name):
                raise BadRequest(
                    f"{what} {name!r} must be 1 to 63 letters, digits, '_' or '-', not "
                    "starting with '-'",
                    param=what,
                )
        for field in spec.fields:
            if field in RESERVED_KEYS:
                raise Unprocessable(
                    f"field {field!r} is written by ingestion; pick another name",
                    code="reserved_field",
                    param="fields",
                )
        fields = {**validate_fields(spec.fields), DOCUMENT_FIELD: "keyword"}
        embedder_name = spec.embedder or self.config.default_embedder
        embedder = self._embedder(embedder_name)
        model = spec.model or embedder.default_model()
        dim = await embedder.dimension(model)
        chunking = spec.chunking or self.config.chunking
        if chunking.mode == "tokens" and embedder.token_spans(model) is None:
            raise Unprocessable(
                f"embedder {embedder_name!r} can't count the tokens of model {model!r}: "
                "chunk by 'sentences' or 'characters'",
                param="chunking",
            )
        record = CollectionRecord(
            name=spec.name,
            embedder=embedder_name,
            model=model,
            dim=dim,
            distance=spec.distance,
            fields=fields,
            chunking=chunking,
            created_at=time.time(),
        )
        await self.catalog.add_collection(record, spec.alias)
        try:
            try:
                await self.vectors.create_collection(spec.name, dim, spec.distance, fields)
            except Conflict:
                # Left by a crash between dropping it and forgetting it: nobody's data.
                await self.vectors.delete_collection(spec.name)
                await self.vectors.create_collection(spec.name, dim, spec.distance, fields)
        except BaseException:
            if spec.alias:
                await self.catalog.remove_alias(spec.alias)
            await self.catalog.remove_collection(spec.name)
            raise
        return await self._view(record, [spec.alias] if spec.alias else [])

    async def collection(self, name: str) -> CollectionView:
        record, _ = await self.catalog.resolve(name)
        aliases = await self.catalog.aliases()
        return await self._view(record, [a for a, c in aliases.items() if c == record.name])

    async def collections(self) -> list[CollectionView]:
        aliases = await self.catalog.aliases()
        return [
            await self._view(record, [a for a, c in aliases.items() if c == record.name])
            for record in await self.catalog.collections()
        ]

    async def delete_collection(self, name: str) -> None:
        if await self.catalog.collection(name) is None:
            if name in await self.catalog.aliases():
                raise Conflict(
                    f"{name!r} is an alias: delete the alias, or name the collection itself",
                    code="is_alias",
                )
            raise NotFound(f"no collection named {name!r}", code="collection_not_found")
        await self.catalog.remove_collection(name)
        await self.vectors.delete_collection(name)

    async def set_alias(self, alias: str, collection: str) -> AliasChange:
        if not COLLECTION_NAME_PATTERN.fullmatch(alias):
            raise BadRequest(f"alias {alias!r} is not a valid name", param="alias")
        return await self.catalog.set_alias(alias, collection)

    async def delete_alias(self, alias: str) -> None:
        if not await self.catalog.remove_alias(alias):
            raise NotFound(f"no alias named {alias!r}", code="alias_not_found")

    async def _view(self, record: CollectionRecord, aliases: list[str]) -> CollectionView:
        try:
            points = (await self.vectors.collection_info(record.name)).count
        except NotFound:
            points = 0
        return CollectionView(
            name=record.name,
            aliases=sorted(aliases),
            embedder=record.embedder,
            model=record.model,
            dim=record.dim,
            distance=record.distance,
            fields=record.fields,
            chunking=record.chunking,
            points=points,
            created_at=record.created_at,
        )

    def _embedder(self, name: str) -> Embedder:
        embedder = self.embedders.get(name)
        if embedder is None:
            known = ", ".join(sorted(self.embedders)) or "none (enable the inference plugin)"
            raise Unprocessable(
                f"no embedder named {name!r} (embedders: {known})",
                code="embedder_not_found",
                param="embedder",
            )
        return embedder

    # -- documents --------------------------------------------------------------------------

    async def ingest(self, name: str, documents: Sequence[Document]) -> IngestReport:
        """Chunk, embed and store documents; one bad document fails alone, with its
        reason in the report. An embedder or store failure fails the call."""
        if len(documents) > self.config.max_documents:
            raise BadRequest(
                f"{len(documents)} documents in one call; at most "
                f"{self.config.max_documents} (retrieval.max_documents): send the rest in "
                "another call",
                code="too_many_documents",
                param="documents",
            )
        record, _ = await self.catalog.resolve(name)
        report = IngestReport(collection=record.name)
        embedder = self._embedder(record.embedder)
        accepted = self._checked(record, documents, report)
        known = await self.catalog.documents(record.name, [d.id for d in accepted])
        spans = embedder.token_spans(record.model) if record.chunking.mode == "tokens" else None
        work: list[_Prepared] = []
        for document in accepted:
            digest = _digest(document)
            before = known.get(document.id)
            if before is not None and before.digest == digest:
                report.skipped += 1
                continue
            chunks = await asyncio.to_thread(
                chunk_text, document.text, record.chunking, count_tokens=spans
            )
            if not chunks:
                report.failed.append(_failure(document.id, "empty_text", "the text is empty"))
                continue
            previous = before.chunks if before else 0
            work.append(
                _Prepared(document=document, digest=digest, chunks=chunks, previous=previous)
            )
        batch = self.config.embed_batch_size
        pending: list[_Prepared] = []
        for prepared in work:
            pending.append(prepared)
            if sum(len(p.chunks) for p in pending) >= batch:
                await self._store(record, embedder, pending, report)
                pending = []
        if pending:
            await self._store(record, embedder, pending, report)
        return report

    async def delete_document(self, name: str, document_id: str) -> None:
        record, _ = await self.catalog.resolve(name)
        known = await self.catalog.documents(record.name, [document_id])
        if document_id not in known:
            raise NotFound(
                f"collection {record.name!r} holds no document {document_id!r}",
                code="document_not_found",
            )
        ids = [f"{document_id}#{i}" for i in range(known[document_id].chunks)]
        await self.vectors.delete(record.name, ids)
        await self.catalog.remove_document(record.name, document_id)

    def _checked(
        self, record: CollectionRecord, documents: Sequence[Document], report: IngestReport
    ) -> list[Document]:
        seen: set[str] = set()
        accepted: list[Document] = []
        for document in documents:
            problem = None
            if not 1 <= len(document.id) <= MAX_DOCUMENT_ID:
                problem = ("bad_id", f"a document id is 1 to {MAX_DOCUMENT_ID} characters")
            elif document.id in seen:
                problem = ("duplicate_id", "the id appears more than once in this call")
            elif len(document.text) > self.config.max_document_chars:
                problem = (
                    "document_too_large",
                    f"{len(document.text)} characters; at most "
                    f"{self.config.max_document_chars} (retrieval.max_document_chars)",
                )
            elif reserved := sorted(RESERVED_KEYS & document.metadata.keys()):
                problem = ("reserved_key", f"metadata key {reserved[0]!r} is reserved")
            else:
                try:
                    validate_payload(record.fields, document.id, document.metadata)
                except ApiError as exc:
                    problem = (exc.code or "bad_metadata", exc.message)
            seen.add(document.id)
            if problem is None:
                accepted.append(document)
            else:
                report.failed.append(_failure(document.id, *problem))
        return accepted

    async def _store(
        self,
        record: CollectionRecord,
        embedder: Embedder,
        work: list[_Prepared],
        report: IngestReport,
    ) -> None:
        texts = [chunk.text for prepared in work for chunk in prepared.chunks]
        vectors = await embedder.embed(record.model, texts, "document")
        points: list[Point] = []
        row = 0
        for prepared in work:
            document = prepared.document
            for chunk in prepared.chunks:
                payload = {
                    **document.metadata,
                    "text": chunk.text,
                    DOCUMENT_FIELD: document.id,
                    "chunk": chunk.index,
                    "start": chunk.start,
                    "end": chunk.end,
                }
                points.append(
                    Point(id=f"{document.id}#{chunk.index}", vector=vectors[row], payload=payload)
                )
                row += 1
        try:
            await self.vectors.upsert(record.name, points)
        except Unprocessable:
            if len(work) == 1:
                raise
            for prepared in work:  # find the document the store refused
                try:
                    await self._store(record, embedder, [prepared], report)
                except Unprocessable as exc:
                    report.failed.append(_failure(prepared.document.id, exc.code, exc.message))
            return
        for prepared in work:
            count = len(prepared.chunks)
            if prepared.previous > count:
                stale = [f"{prepared.document.id}#{i}" for i in range(count, prepared.previous)]
                await self.vectors.delete(record.name, stale)
            await self.catalog.put_document(
                record.name,
                prepared.document.id,
                DocumentRecord(chunks=count, digest=prepared.digest),
            )
            report.ingested += 1
            report.chunks += count

    # -- search -----------------------------------------------------------------------------

    async def search(
        self,
        name: str,
        *,
        text: str | None,
        vector: Sequence[float] | None,
        top_k: int,
        filter: Mapping[str, Any] | None,
        score_threshold: float | None,
    ) -> tuple[CollectionRecord, list[Hit]]:
        if (text is None) == (vector is None):
            raise BadRequest("give either text or vector", code="text_or_vector", param="text")
        if not 1 <= top_k <= self.config.max_top_k:
            raise BadRequest(
                f"top_k must be between 1 and {self.config.max_top_k}, not {top_k}",
                param="top_k",
            )
        for attempt in (1, 2):
            record, _ = await self.catalog.resolve(name)
            query = vector
            if text is not None:
                embedder = self._embedder(record.embedder)
                query = (await embedder.embed(record.model, [text], "query"))[0]
            assert query is not None
            try:
                found = await self.vectors.search(record.name, query, top_k, filter)
            except NotFound:
                if attempt == 2:
                    raise
                continue  # the alias moved and its old collection is gone: look again
            break
        if score_threshold is not None:
            if record.distance == "euclid":
                found = [p for p in found if p.score <= score_threshold]
            else:
                found = [p for p in found if p.score >= score_threshold]
        return record, [_hit(point.id, point.score, point.payload) for point in found]


def _not_started() -> ServiceUnavailable:
    return ServiceUnavailable("retrieval is not started", code="retrieval_not_started")


def _hit(point_id: str, score: float, payload: dict[str, Any]) -> Hit:
    metadata = {k: v for k, v in payload.items() if k not in RESERVED_KEYS}
    return Hit(
        id=point_id,
        document_id=str(payload.get(DOCUMENT_FIELD, "")),
        score=score,
        text=str(payload.get("text", "")),
        metadata=metadata,
        chunk=int(payload.get("chunk", 0)),
        start=int(payload.get("start", 0)),
        end=int(payload.get("end", 0)),
    )


def _digest(document: Document) -> str:
    encoded = msgspec.msgpack.encode([document.text, document.metadata], order="sorted")
    return hashlib.sha256(encoded).hexdigest()


def _failure(document_id: str, code: str | None, message: str) -> IngestFailure:
    return IngestFailure(id=document_id, code=code or "failed", message=message)
