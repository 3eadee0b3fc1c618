"""The retrieval catalog in the storage slot: which collections exist with which embedder,
model and chunking, which alias points where, and what each collection holds of each
document. Every worker reads the same rows, so an alias moved by one is moved for all.

Aliases and collections share one namespace: an alias never has the name of a
collection, nor a collection that of an alias, so a name always means one thing.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec, TypeVar

import msgspec
from noa.builtin_plugins.retrieval.chunking import ChunkingConfig
from noa.plugin_sdk.errors import ApiError, Conflict, NotFound, ServiceUnavailable
from noa.plugin_sdk.ports.storage import SqlRunner, StoragePort
from noa.plugin_sdk.ports.vectors import Distance, FieldType

__all__ = ["AliasChange", "Catalog", "CollectionRecord", "DocumentRecord", "guarded"]

log = logging.getLogger("noa.retrieval")
P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S")

_COLLECTIONS = "noa_retrieval_collection"
_ALIASES = "noa_retrieval_alias"
_DOCUMENTS = "noa_retrieval_document"


class CollectionRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A physical collection and how texts become its vectors."""

    name: str
    # Empty for a collection of vectors only: no documents, no text queries.
    embedder: str
    model: str
    dim: int
    distance: Distance
    fields: dict[str, FieldType]
    chunking: ChunkingConfig
    created_at: float


class DocumentRecord(msgspec.Struct, frozen=True, kw_only=True):
    chunks: int
    digest: str


class AliasChange(msgspec.Struct, frozen=True, kw_only=True):
    alias: str
    collection: str
    # Where the alias pointed before; None when it was created.
    previous: str | None


def guarded(
    method: Callable[Concatenate[S, P], Awaitable[T]],
) -> Callable[Concatenate[S, P], Awaitable[T]]:
    """A database failure in ``method`` becomes a 503 naming the catalog and the likely
    fix, instead of an error the client can do nothing with."""

    @functools.wraps(method)
    async def run(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(self, *args, **kwargs)
        except ApiError:
            raise
        except Exception as exc:
            log.error("the retrieval catalog failed: %s: %s", type(exc).__name__, exc)
            raise ServiceUnavailable(
                f"the retrieval catalog in the storage slot failed ({type(exc).__name__}); "
                "if its tables are missing, run `noa migrate apply`",
                code="catalog_unavailable",
            ) from exc

    return run


def _record(row: dict[str, object]) -> CollectionRecord:
    return CollectionRecord(
        name=str(row["name"]),
        embedder=str(row["embedder"]),
        model=str(row["model"]),
        dim=int(row["dim"]),  # type: ignore[call-overload]
        distance=row["distance"],  # type: ignore[arg-type]
        fields=msgspec.json.decode(str(row["fields"])),
        chunking=msgspec.json.decode(str(row["chunking"]), type=ChunkingConfig),
        created_at=float(row["created_at"]),  # type: ignore[arg-type]
    )


def _collection_not_found(name: str) -> NotFound:
    return NotFound(
        f"no collection or alias named {name!r}", code="collection_not_found", param="collection"
    )


class Catalog:
    def __init__(self, storage: StoragePort) -> None:
        self.storage = storage

    # -- collections ------------------------------------------------------------------------

    @guarded
    async def add_collection(self, record: CollectionRecord, alias: str | None) -> None:
        """Record a new collection (and an alias to it); Conflict when the name, or the
        alias, is taken."""
        async with self.storage.transaction() as tx:
            for name in (record.name, alias):
                if name is not None and await self._taken(tx, name):
                    raise Conflict(
                        f"the name {name!r} is taken by a collection or an alias",
                        code="name_taken",
                        param="alias" if name == alias else "name",
                    )
            await tx.execute(
                f"INSERT INTO {_COLLECTIONS} (name, embedder, model, dim, distance, fields, "
                "chunking, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                record.name,
                record.embedder,
                record.model,
                record.dim,
                record.distance,
                msgspec.json.encode(record.fields).decode(),
                msgspec.json.encode(record.chunking).decode(),
                record.created_at,
            )
            if alias is not None:
                await tx.execute(
                    f"INSERT INTO {_ALIASES} (name, collection, updated_at) VALUES ($1, $2, $3)",
                    alias,
                    record.name,
                    time.time(),
                )

    @guarded
    async def remove_collection(self, name: str) -> None:
        """Forget a collection and its documents; Conflict while an alias points to it."""
        async with self.storage.transaction() as tx:
            aliases = await tx.fetch(f"SELECT name FROM {_ALIASES} WHERE collection = $1", name)
            if aliases:
                listing = ", ".join(sorted(str(a["name"]) for a in aliases))
                raise Conflict(
                    f"collection {name!r} is in use by alias(es) {listing}: move or delete "
                    "them first",
                    code="collection_in_use",
                )
            await tx.execute(f"DELETE FROM {_DOCUMENTS} WHERE collection = $1", name)
            await tx.execute(f"DELETE FROM {_COLLECTIONS} WHERE name = $1", name)

    @guarded
    async def collection(self, name: str) -> CollectionRecord | None:
        row = await self.storage.fetch_one(f"SELECT * FROM {_COLLECTIONS} WHERE name = $1", name)
        return None if row is None else _record(row)

    @guarded
    async def collections(self) -> list[CollectionRecord]:
        rows = await self.storage.fetch(f"SELECT * FROM {_COLLECTIONS} ORDER BY name")
        return [_record(row) for row in rows]

    @guarded
    async def resolve(self, name: str) -> tuple[CollectionRecord, str | None]:
        """The collection ``name`` means, and the alias it went through (None: it names
        the collection itself). One query; 404 when it means nothing."""
        row = await self.storage.fetch_one(
            f"SELECT c.*, a.name AS alias FROM {_ALIASES} a JOIN {_COLLECTIONS} c "
            f"ON c.name = a.collection WHERE a.name = $1",
            name,
        )
        if row is not None:
            return _record(row), name
        found = await self.collection(name)
        if found is None:
            raise _collection_not_found(name)
        return found, None

    # -- aliases ----------------------------------------------------------------------------

    @guarded
    async def set_alias(self, alias: str, collection: str) -> AliasChange:
        """Point ``alias`` at ``collection`` in one statement: every search after the
        commit goes to the new collection, none sees a mix."""
        async with self.storage.transaction() as tx:
            if await tx.fetch_one(f"SELECT name FROM {_COLLECTIONS} WHERE name = $1", alias):
                raise Conflict(
                    f"{alias!r} is a collection; an alias needs a name of its own",
                    code="name_taken",
                    param="alias",
                )
            if not await tx.fetch_one(
                f"SELECT name FROM {_COLLECTIONS} WHERE name = $1", collection
            ):
                raise NotFound(
                    f"no collection named {collection!r}",
                    code="collection_not_found",
                    param="collection",
                )
            before = await tx.fetch_one(f"SELECT collection FROM {_ALIASES} WHERE name = $1", alias)
            await tx.execute(
                f"INSERT INTO {_ALIASES} (name, collection, updated_at) VALUES ($1, $2, $3) "
                "ON CONFLICT (name) DO UPDATE SET collection = excluded.collection, "
                "updated_at = excluded.updated_at",
                alias,
                collection,
                time.time(),
            )
        previous = None if before is None else str(before["collection"])
        return AliasChange(alias=alias, collection=collection, previous=previous)

    @guarded
    async def remove_alias(self, alias: str) -> bool:
        return await self.storage.execute(f"DELETE FROM {_ALIASES} WHERE name = $1", alias) > 0

    @guarded
    async def aliases(self) -> dict[str, str]:
        rows = await self.storage.fetch(f"SELECT name, collection FROM {_ALIASES} ORDER BY name")
        return {str(row["name"]): str(row["collection"]) for row in rows}

    # -- documents --------------------------------------------------------------------------

    @guarded
    async def documents(self, collection: str, ids: list[str]) -> dict[str, DocumentRecord]:
        """What the collection holds of these documents (absent ids: nothing)."""
        found: dict[str, DocumentRecord] = {}
        for first in range(0, len(ids), 500):
            keys = [f"{collection}/{i}" for i in ids[first : first + 500]]
            marks = ", ".join(f"${n}" for n in range(1, len(keys) + 1))
            rows = await self.storage.fetch(
                f"SELECT key, chunks, digest FROM {_DOCUMENTS} WHERE key IN ({marks})", *keys
            )
            for row in rows:
                doc_id = str(row["key"])[len(collection) + 1 :]
                found[doc_id] = DocumentRecord(chunks=int(row["chunks"]), digest=str(row["digest"]))
        return found

    @guarded
    async def put_document(self, collection: str, doc_id: str, record: DocumentRecord) -> None:
        await self.storage.execute(
            f"INSERT INTO {_DOCUMENTS} (key, collection, chunks, digest, updated_at) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key) DO UPDATE SET "
            "chunks = excluded.chunks, digest = excluded.digest, updated_at = excluded.updated_at",
            f"{collection}/{doc_id}",
            collection,
            record.chunks,
            record.digest,
            time.time(),
        )

    @guarded
    async def remove_document(self, collection: str, doc_id: str) -> None:
        await self.storage.execute(
            f"DELETE FROM {_DOCUMENTS} WHERE key = $1", f"{collection}/{doc_id}"
        )

    async def _taken(self, tx: SqlRunner, name: str) -> bool:
        for table in (_COLLECTIONS, _ALIASES):
            if await tx.fetch_one(f"SELECT name FROM {table} WHERE name = $1", name):
                return True
        return False
