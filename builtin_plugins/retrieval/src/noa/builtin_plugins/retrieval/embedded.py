"""``EmbeddedVectorStore``: the ``embedded`` driver of the ``vectors`` slot.

Exact search in this process, with no service to run, persisted under
``<data_dir>/vectors/<collection>/`` and surviving restarts and crashes. How the files
are kept consistent, also between processes, is in
:mod:`~noa.builtin_plugins.retrieval.collection`; how a large search stays fast in
:mod:`~noa.builtin_plugins.retrieval.scan_kernels`.

Concurrency: CPU- and disk-bound work, and every wait for a lock on a file, runs in
worker threads (``asyncio.to_thread``), so the event loop stays free. In a process each
collection has one writer at a time (an ``asyncio.Lock``); searches take no lock and
read the last published state. A whole batch is checked before the lock is taken and
before anything is written.

Several processes (the server's workers) may share the folder, each reading and
writing, each seeing what the others committed. Writers of a collection take turns
through its ``.write.lock``; creating and deleting collections, and clearing what an
interrupted one left, hold ``<folder>/.catalog.lock`` exclusively, and opening a
collection holds it shared, so none is deleted while half open (each an ``flock``; see
:mod:`~noa.builtin_plugins.retrieval.file_locks`). A collection another process made
appears in :meth:`~EmbeddedVectorStore.list_collections` and at the first use of its
name; one it deleted answers 404 here too.

A collection whose files are damaged in a way a crash cannot explain is reported in the
log and answers 503 (``collection_unreadable``, naming the file) while the others carry
on; deleting it removes it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import numpy as np
from noa.builtin_plugins.retrieval import collection_files as files
from noa.builtin_plugins.retrieval.collection import Collection, CollectionGone
from noa.builtin_plugins.retrieval.config import RetrievalConfig
from noa.builtin_plugins.retrieval.file_locks import FileLock
from noa.builtin_plugins.retrieval.record_log import CorruptFile
from noa.builtin_plugins.retrieval.vector_checks import checked_points, matrix_of, vector_of
from noa.plugin_sdk.errors import (
    BadRequest,
    Conflict,
    NotFound,
    ServiceUnavailable,
    Unprocessable,
)
from noa.plugin_sdk.ports.vectors import (
    COLLECTION_NAME_PATTERN,
    MAX_DIM,
    CollectionInfo,
    Distance,
    FieldType,
    Point,
    ScoredPoint,
    validate_collection,
    validate_filter,
)
from numpy.typing import NDArray

__all__ = ["MAX_DIM", "EmbeddedVectorStore"]

log = logging.getLogger("noa.retrieval")

T = TypeVar("T")


class _Entry:
    """A collection by name: open, or unreadable with the reason and the folder's
    identity then (a folder made anew under the name is opened again)."""

    __slots__ = ("collection", "folder", "identity", "lock", "problem")

    def __init__(
        self,
        folder: Path,
        collection: Collection | None,
        problem: str = "",
        identity: tuple[int, int] | None = None,
    ) -> None:
        self.folder = folder
        self.collection = collection
        self.problem = problem
        self.identity = identity
        self.lock = asyncio.Lock()


class EmbeddedVectorStore:
    """Collections in files under ``path``, searched exactly in this process."""

    def __init__(self, path: str | os.PathLike[str], *, exact_max_values: int = 4_000_000) -> None:
        self.path = Path(path)
        self.exact_max_values = exact_max_values
        self._entries: dict[str, _Entry] = {}
        self._opened = False
        self._closed = False
        self._catalog: FileLock | None = None
        # Opening, creating and deleting collections: one at a time in this process;
        # between processes, the catalog's file lock.
        self._catalog_lock = asyncio.Lock()

    @classmethod
    def from_config(cls, config: RetrievalConfig, data_dir: str) -> EmbeddedVectorStore:
        path = config.embedded_path or str(Path(data_dir) / "vectors")
        return cls(path, exact_max_values=config.embedded_exact_max_values)

    async def start(self) -> None:
        """Open the folder and every collection in it (otherwise done on first use)."""
        await self._ready()

    # -- collections ------------------------------------------------------------------------

    async def create_collection(
        self,
        name: str,
        dim: int,
        distance: Distance,
        fields: Mapping[str, FieldType] | None = None,
    ) -> None:
        declared = validate_collection(name, dim, distance, fields)
        await self._ready()
        async with self._catalog_lock:
            collection = await asyncio.to_thread(self._create, name, dim, distance, declared)
            stale = self._entries.get(name)
            if stale is not None:  # deleted by another process
                await self._forget(name, stale)
            self._entries[name] = _Entry(collection.folder, collection)

    async def collection_info(self, name: str) -> CollectionInfo:
        async def info(entry: _Entry, found: Collection) -> CollectionInfo:
            count = await asyncio.to_thread(found.count)
            return CollectionInfo(
                name=name,
                dim=found.dim,
                distance=found.distance,
                fields=dict(found.fields),
                count=count,
            )

        return await self._attempt(name, info)

    async def delete_collection(self, name: str) -> bool:
        await self._ready()
        if not COLLECTION_NAME_PATTERN.fullmatch(name):
            return False
        async with self._catalog_lock:
            entry = self._entries.get(name)
            if entry is not None:
                await self._forget(name, entry)  # after this process's write in progress
            return await asyncio.to_thread(self._drop, name)

    async def list_collections(self) -> list[str]:
        await self._ready()
        names = await asyncio.to_thread(self._names_on_disk)
        async with self._catalog_lock:
            for name, entry in list(self._entries.items()):
                if name not in names:  # deleted by another process
                    await self._forget(name, entry)
        return sorted(names)

    # -- points -----------------------------------------------------------------------------

    async def upsert(self, collection: str, points: Sequence[Point]) -> None:
        async def upsert(entry: _Entry, found: Collection) -> None:
            if not points:
                return
            ids, vectors, payloads = await asyncio.to_thread(_checked_batch, found, points)
            async with entry.lock:
                if self._entries.get(collection) is not entry:
                    raise CollectionGone(collection)
                await asyncio.to_thread(found.upsert, ids, vectors, payloads)

        await self._attempt(collection, upsert)

    async def search(
        self,
        collection: str,
        vector: Sequence[float],
        top_k: int,
        filter: Mapping[str, Any] | None = None,
    ) -> list[ScoredPoint]:
        async def search(entry: _Entry, found: Collection) -> list[ScoredPoint]:
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
                raise BadRequest(f"top_k must be a positive integer, got {top_k!r}", param="top_k")
            query = vector_of(
                found.dim, vector, "the query vector", normalise=found.distance == "cosine"
            )
            validate_filter(found.fields, filter)
            where = dict(filter) if filter else None
            hits = await asyncio.to_thread(found.search, query, top_k, where)
            return [ScoredPoint(id=i, score=s, payload=dict(p)) for i, s, p in hits]

        return await self._attempt(collection, search)

    async def delete(self, collection: str, ids: Sequence[str]) -> int:
        async def delete(entry: _Entry, found: Collection) -> int:
            if isinstance(ids, str):
                raise BadRequest("ids must be a list of point ids, not one string", param="ids")
            async with entry.lock:
                if self._entries.get(collection) is not entry:
                    raise CollectionGone(collection)
                return await asyncio.to_thread(found.delete, [str(i) for i in ids])

        return await self._attempt(collection, delete)

    async def count(self, collection: str) -> int:
        async def count(entry: _Entry, found: Collection) -> int:
            return await asyncio.to_thread(found.count)

        return await self._attempt(collection, count)

    # -- the store --------------------------------------------------------------------------

    async def ping(self) -> bool:
        if self._closed:
            return False
        await self._ready()
        return self.path.is_dir()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for entry in list(self._entries.values()):
            if entry.collection is not None:
                async with entry.lock:  # let a write in progress finish
                    await asyncio.to_thread(entry.collection.close)
        self._entries.clear()
        async with self._catalog_lock:
            if self._catalog is not None:
                self._catalog.close()
                self._catalog = None

    async def _ready(self) -> None:
        if self._closed:
            raise ServiceUnavailable("the vector store is closed", code="vectors_closed")
        if self._opened:
            return
        async with self._catalog_lock:
            if not self._opened:
                self._entries = await asyncio.to_thread(self._open_all)
                self._opened = True

    async def _attempt(self, name: str, work: Callable[[_Entry, Collection], Awaitable[T]]) -> T:
        """Run ``work`` on the collection ``name``. When another process turns out to have
        deleted it, look the name up again: 404, or the collection made anew by it."""
        while True:
            entry, found = await self._collection(name)
            try:
                return await work(entry, found)
            except CollectionGone:
                await self._forget(name, entry)
            except CorruptFile as exc:
                log.error("vector collection %r is unreadable: %s", name, exc)
                await self._forget(name, entry)
                identity = await asyncio.to_thread(_identity, entry.folder)
                if name not in self._entries:
                    self._entries[name] = _Entry(entry.folder, None, str(exc), identity)

    async def _collection(self, name: str) -> tuple[_Entry, Collection]:
        await self._ready()
        entry = self._entries.get(name)
        if entry is None or (
            entry.collection is None
            and await asyncio.to_thread(_identity, entry.folder) != entry.identity
        ):
            entry = await self._open_named(name, entry)
        if entry.collection is None:
            raise ServiceUnavailable(
                f"collection {name!r} is unreadable: {entry.problem}; restore its folder "
                "from a backup, or delete the collection",
                code="collection_unreadable",
            )
        return entry, entry.collection

    async def _open_named(self, name: str, stale: _Entry | None) -> _Entry:
        """Open the folder of a name not open here (made by another process, or made
        anew after it was found unreadable)."""
        if not COLLECTION_NAME_PATTERN.fullmatch(name):
            raise _not_found(name)
        async with self._catalog_lock:
            entry = self._entries.get(name)
            if entry is stale:  # not opened meanwhile by another task
                if stale is not None:
                    await self._forget(name, stale)
                entry = await asyncio.to_thread(self._open_one, name)
                if entry is None:
                    raise _not_found(name)
                self._entries[name] = entry
        if entry is None:
            raise _not_found(name)
        return entry

    async def _forget(self, name: str, entry: _Entry) -> None:
        """Stop serving ``entry`` and close it, once a write in progress is done."""
        if self._entries.get(name) is entry:
            del self._entries[name]
        if entry.collection is not None:
            async with entry.lock:
                await asyncio.to_thread(entry.collection.close)

    # -- in worker threads ------------------------------------------------------------------

    def _open_all(self) -> dict[str, _Entry]:
        self.path.mkdir(parents=True, exist_ok=True)
        self._catalog = FileLock(self.path / ".catalog.lock")
        with self._catalog.exclusive():
            for folder in self.path.iterdir():
                if folder.is_dir() and folder.name.startswith((".creating-", ".deleting-")):
                    # An interrupted create or delete: never visible under a collection name.
                    shutil.rmtree(folder, ignore_errors=True)
        entries: dict[str, _Entry] = {}
        with self._catalog.shared():
            for folder in sorted(self.path.iterdir()):
                if not folder.is_dir() or folder.name.startswith("."):
                    continue
                if not COLLECTION_NAME_PATTERN.fullmatch(folder.name):
                    log.warning("ignoring %s: not a collection name", folder)
                    continue
                entries[folder.name] = self._open_folder(folder)
        return entries

    def _open_one(self, name: str) -> _Entry | None:
        assert self._catalog is not None
        folder = self.path / name
        if not folder.is_dir():
            return None
        with self._catalog.shared():
            if not folder.is_dir():
                return None
            return self._open_folder(folder)

    def _open_folder(self, folder: Path) -> _Entry:
        try:
            return _Entry(folder, Collection.open(folder, self.exact_max_values))
        except (CorruptFile, OSError) as exc:
            log.error("vector collection %r is unreadable: %s", folder.name, exc)
            return _Entry(folder, None, str(exc), _identity(folder))

    def _create(
        self, name: str, dim: int, distance: Distance, fields: dict[str, FieldType]
    ) -> Collection:
        assert self._catalog is not None
        with self._catalog.exclusive():
            if (self.path / name).exists():
                raise Conflict(f"collection {name!r} already exists", code="collection_exists")
            return Collection.create(self.path, name, dim, distance, fields, self.exact_max_values)

    def _drop(self, name: str) -> bool:
        assert self._catalog is not None
        with self._catalog.exclusive():
            folder = self.path / name
            if not folder.is_dir():
                return False
            files.drop_folder(self.path, folder)
        return True

    def _names_on_disk(self) -> set[str]:
        return {
            folder.name
            for folder in self.path.iterdir()
            if COLLECTION_NAME_PATTERN.fullmatch(folder.name) and folder.is_dir()
        }


def _identity(folder: Path) -> tuple[int, int] | None:
    """Which folder is at ``folder`` now (a rename into place changes its ctime)."""
    try:
        stat = os.stat(folder)
    except OSError:
        return None
    return stat.st_ino, stat.st_ctime_ns


def _not_found(name: str) -> NotFound:
    return NotFound(f"no collection named {name!r}", code="collection_not_found")


def _checked_batch(
    collection: Collection, points: Sequence[Point]
) -> tuple[list[str], NDArray[np.float32], msgspec.Raw]:
    """Ids (the last of a repeated id wins), float32 vectors (cosine: normalised) and the
    msgpack of the payloads of a batch, or the error naming its first bad point. Nothing
    is written here."""
    kept = checked_points(collection.fields, points)
    cosine = collection.distance == "cosine"
    vectors = matrix_of(collection.dim, kept, normalise=cosine).astype(np.float32)
    try:
        encoded = msgspec.msgpack.encode([p.payload for p in kept])
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
        for point in kept:
            try:
                msgspec.msgpack.encode(point.payload)
            except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
                raise Unprocessable(
                    f"point {point.id!r}: the payload can't be stored: {exc}", param="payload"
                ) from None
        raise
    return [p.id for p in kept], vectors, msgspec.Raw(encoded)
