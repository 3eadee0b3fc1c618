"""``EmbeddedVectorStore``: the ``embedded`` driver of the ``vectors`` slot.

Exact search in this process, with no service to run, persisted under
``<data_dir>/vectors/<collection>/`` and surviving restarts and crashes. How the files
are kept consistent is in :mod:`~noa.builtin_plugins.retrieval.collection`, how a large
search stays fast in :mod:`~noa.builtin_plugins.retrieval.scan_kernels`.

Concurrency: CPU- and disk-bound work runs in worker threads (``asyncio.to_thread``), so
the event loop stays free. Each collection has one writer at a time (an ``asyncio.Lock``);
searches take no lock and read the last published state. A whole batch is checked
before the lock is taken and before anything is written.

One process owns the folder (an exclusive ``flock`` on ``<folder>/.lock``): the embedded
profile runs one worker; deployments with several use the ``qdrant`` driver.

A collection whose files are damaged in a way a crash cannot explain is reported in the
log at open and answers 503 (``collection_unreadable``, naming the file) while the
others carry on; deleting it removes it.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from noa.builtin_plugins.retrieval.collection import Collection
from noa.builtin_plugins.retrieval.config import RetrievalConfig
from noa.builtin_plugins.retrieval.field_columns import check_payload
from noa.builtin_plugins.retrieval.record_log import CorruptFile
from noa.plugin_sdk.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PluginStartError,
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
    validate_payload,
)
from numpy.typing import NDArray

__all__ = ["MAX_DIM", "EmbeddedVectorStore"]

log = logging.getLogger("noa.retrieval")


class _Entry:
    """A collection by name: open, or unreadable with the reason."""

    __slots__ = ("collection", "folder", "lock", "problem")

    def __init__(self, folder: Path, collection: Collection | None, problem: str = "") -> None:
        self.folder = folder
        self.collection = collection
        self.problem = problem
        self.lock = asyncio.Lock()


class EmbeddedVectorStore:
    """Collections in files under ``path``, searched exactly in this process."""

    def __init__(self, path: str | os.PathLike[str], *, exact_max_values: int = 4_000_000) -> None:
        self.path = Path(path)
        self.exact_max_values = exact_max_values
        self._entries: dict[str, _Entry] = {}
        self._opened = False
        self._closed = False
        self._lock_fd = -1
        # Opening, creating and deleting collections: one at a time.
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
            if name in self._entries:
                raise Conflict(f"collection {name!r} already exists", code="collection_exists")
            collection = await asyncio.to_thread(
                Collection.create, self.path, name, dim, distance, declared, self.exact_max_values
            )
            self._entries[name] = _Entry(collection.folder, collection)

    async def collection_info(self, name: str) -> CollectionInfo:
        found = await self._collection(name)
        return CollectionInfo(
            name=name,
            dim=found.dim,
            distance=found.distance,
            fields=dict(found.fields),
            count=found.count,
        )

    async def delete_collection(self, name: str) -> bool:
        await self._ready()
        async with self._catalog_lock:
            entry = self._entries.get(name)
            if entry is None:
                return False
            async with entry.lock:
                del self._entries[name]
                if entry.collection is not None:
                    await asyncio.to_thread(entry.collection.drop, self.path)
                else:
                    await asyncio.to_thread(shutil.rmtree, entry.folder, True)
        return True

    async def list_collections(self) -> list[str]:
        await self._ready()
        return sorted(self._entries)

    # -- points -----------------------------------------------------------------------------

    async def upsert(self, collection: str, points: Sequence[Point]) -> None:
        found = await self._collection(collection)
        entry = self._entries[collection]
        if not points:
            return
        ids, vectors, payloads = await asyncio.to_thread(_checked_batch, found, points)
        async with entry.lock:
            if self._entries.get(collection) is not entry:
                raise _not_found(collection)
            await asyncio.to_thread(found.upsert, ids, vectors, payloads)

    async def search(
        self,
        collection: str,
        vector: Sequence[float],
        top_k: int,
        filter: Mapping[str, Any] | None = None,
    ) -> list[ScoredPoint]:
        found = await self._collection(collection)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise BadRequest(f"top_k must be a positive integer, got {top_k!r}", param="top_k")
        query = _vector_of(found, vector, "the query vector")
        validate_filter(found.fields, filter)
        hits = await asyncio.to_thread(found.search, query, top_k, dict(filter) if filter else None)
        return [ScoredPoint(id=i, score=s, payload=dict(p)) for i, s, p in hits]

    async def delete(self, collection: str, ids: Sequence[str]) -> int:
        found = await self._collection(collection)
        entry = self._entries[collection]
        if isinstance(ids, str):
            raise BadRequest("ids must be a list of point ids, not one string", param="ids")
        async with entry.lock:
            if self._entries.get(collection) is not entry:
                raise _not_found(collection)
            return await asyncio.to_thread(found.delete, [str(i) for i in ids])

    async def count(self, collection: str) -> int:
        return (await self._collection(collection)).count

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
            async with entry.lock:  # let a write in progress finish
                if entry.collection is not None:
                    entry.collection.close()
        self._entries.clear()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    async def _ready(self) -> None:
        if self._closed:
            raise ServiceUnavailable("the vector store is closed", code="vectors_closed")
        if self._opened:
            return
        async with self._catalog_lock:
            if not self._opened:
                self._entries = await asyncio.to_thread(self._open_all)
                self._opened = True

    def _open_all(self) -> dict[str, _Entry]:
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise PluginStartError(
                "retrieval",
                f"the embedded vector store {self.path} is in use by another process; it "
                "serves one process: run one worker ([server] workers = 1) or use the "
                "qdrant driver",
            ) from None
        self._lock_fd = fd
        entries: dict[str, _Entry] = {}
        for folder in sorted(self.path.iterdir()):
            if not folder.is_dir():
                continue
            if folder.name.startswith((".creating-", ".deleting-")):
                # An interrupted create or delete: never visible under a collection name.
                shutil.rmtree(folder, ignore_errors=True)
                continue
            if not COLLECTION_NAME_PATTERN.fullmatch(folder.name):
                log.warning("ignoring %s: not a collection name", folder)
                continue
            try:
                entries[folder.name] = _Entry(
                    folder, Collection.open(folder, self.exact_max_values)
                )
            except (CorruptFile, OSError) as exc:
                log.error("vector collection %r is unreadable: %s", folder.name, exc)
                entries[folder.name] = _Entry(folder, None, str(exc))
        return entries

    async def _collection(self, name: str) -> Collection:
        await self._ready()
        entry = self._entries.get(name)
        if entry is None:
            raise _not_found(name)
        if entry.collection is None:
            raise ServiceUnavailable(
                f"collection {name!r} is unreadable: {entry.problem}; restore its folder "
                "from a backup, or delete the collection",
                code="collection_unreadable",
            )
        return entry.collection


def _not_found(name: str) -> NotFound:
    return NotFound(f"no collection named {name!r}", code="collection_not_found")


def _checked_batch(
    collection: Collection, points: Sequence[Point]
) -> tuple[list[str], NDArray[np.float32], msgspec.Raw]:
    """Ids (the last of a repeated id wins), float32 vectors and encoded payloads of a
    batch, or the error naming its first bad point. Nothing is written here."""
    last: dict[str, int] = {}
    for index, point in enumerate(points):
        if not isinstance(point.id, str) or not point.id:
            raise BadRequest("a point id must be a non-empty string", param="id")
        validate_payload(collection.fields, point.id, point.payload)
        check_payload(collection.fields, point.id, point.payload)
        last[point.id] = index
    kept = [points[i] for i in sorted(last.values())]
    vectors = _matrix_of(collection, kept)
    payloads = [p.payload for p in kept]
    try:
        encoded = msgspec.msgpack.encode(payloads)
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


def _matrix_of(collection: Collection, points: Sequence[Point]) -> NDArray[np.float32]:
    for point in points:
        _check_length(collection, point.vector, f"point {point.id!r}")
    try:
        values = np.array([p.vector for p in points], dtype=np.float64)
    except (TypeError, ValueError):
        for point in points:
            _vector_of(collection, point.vector, f"point {point.id!r}")
        raise
    finite = np.isfinite(values).all(axis=1)
    if not finite.all():
        bad = points[int(np.argmin(finite))]
        raise Unprocessable(f"point {bad.id!r} has a value that is not finite", param="vector")
    if collection.distance == "cosine":
        norms = np.sqrt(np.einsum("ij,ij->i", values, values))
        norms[norms == 0] = 1.0
        values /= norms[:, None]
    stored = _float32(values)
    fits = np.isfinite(stored).all(axis=1)
    if not fits.all():
        bad = points[int(np.argmin(fits))]
        raise Unprocessable(f"point {bad.id!r} has a value too large for float32", param="vector")
    return stored


def _vector_of(collection: Collection, vector: Sequence[float], what: str) -> NDArray[np.float64]:
    """One vector as float64 (cosine: normalised), checked."""
    _check_length(collection, vector, what)
    try:
        values = np.array(vector, dtype=np.float64)
    except (TypeError, ValueError):
        raise Unprocessable(f"{what} must be a list of numbers", param="vector") from None
    if values.shape != (collection.dim,):
        raise Unprocessable(f"{what} must be a flat list of numbers", param="vector")
    if not np.isfinite(values).all():
        raise Unprocessable(f"{what} has a value that is not finite", param="vector")
    if collection.distance == "cosine":
        norm = math.sqrt(float(values @ values))
        if norm > 0:
            values /= norm
    if not np.isfinite(_float32(values)).all():
        raise Unprocessable(f"{what} has a value too large for float32", param="vector")
    return values


def _check_length(collection: Collection, vector: Sequence[float], what: str) -> None:
    try:
        length = len(vector)
    except TypeError:
        raise Unprocessable(f"{what} must be a list of numbers", param="vector") from None
    if length != collection.dim:
        raise Unprocessable(
            f"{what} has {length} dimensions, the collection takes {collection.dim}",
            code="wrong_dimension",
            param="vector",
        )


def _float32(values: NDArray[np.float64]) -> NDArray[np.float32]:
    with np.errstate(over="ignore"):
        return values.astype(np.float32)
