"""``QdrantLocalStore`` and ``QdrantServerStore``: the ``qdrant-local`` and ``qdrant``
drivers of the ``vectors`` slot, one code path on ``qdrant_client.AsyncQdrantClient``.

How NOA's port maps onto Qdrant:

- **Ids.** Qdrant takes unsigned integers or UUIDs; a NOA id is any string. A point is
  stored under ``uuid5(ID_NAMESPACE, id)`` with the original id in its payload under
  :data:`ID_KEY`, which is stripped from results. The key holds a ``:``, so it can't
  be a declared field name, and a payload that uses it is refused.
- **Schema.** Dimension and distance are Qdrant's own vector parameters; the declared
  fields are kept in the collection's ``metadata`` (``{"noa": {"fields": ...}}``), which
  Qdrant stores with the collection, so no sidecar point skews counts. On a server each
  declared field also gets a payload index of its type (local mode has no indexes).
- **Filters** are checked with :func:`validate_filter`, then translated: a keyword or
  bool equals with ``MatchValue``, an integer with ``MatchValue`` of the int (a float
  with a fraction can't equal one, so the search is empty), a float field with
  ``Range(gte=v, lte=v)`` (``MatchValue`` takes no floats); ``any`` is ``MatchAny`` for
  keywords and integers and an OR of those equalities otherwise; ranges are ``Range``.
- **Scores** are Qdrant's: cosine and dot similarity, euclid distance (lowest first).

Local mode is synchronous Python behind the async API and keeps its SQLite handles on
the thread that opened them, so the local store runs its client on one thread of its
own, with its own event loop: the server's event loop stays free, and calls are
serialised as local mode needs. It locks its folder: one process at a time.
"""

from __future__ import annotations

import abc
import asyncio
import fcntl
import logging
import os
import threading
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Literal, TypeVar

from noa.builtin_plugins.retrieval.config import RetrievalConfig
from noa.builtin_plugins.retrieval.qdrant_mapping import (
    ID_KEY,
    Schema,
    checked_batch,
    point_key,
    qdrant_filter,
    vector_of,
)
from noa.plugin_sdk.errors import (
    ApiError,
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
    validate_fields,
    validate_filter,
)
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

__all__ = ["ID_KEY", "MAX_DIM", "QdrantLocalStore", "QdrantServerStore"]

log = logging.getLogger("noa.retrieval")

T = TypeVar("T")

_DISTANCES: dict[str, models.Distance] = {
    "cosine": models.Distance.COSINE,
    "dot": models.Distance.DOT,
    "euclid": models.Distance.EUCLID,
}
_NOA_DISTANCES: dict[models.Distance, Distance] = {
    models.Distance.COSINE: "cosine",
    models.Distance.DOT: "dot",
    models.Distance.EUCLID: "euclid",
}
_INDEX_TYPES: dict[str, models.PayloadSchemaType] = {
    "keyword": models.PayloadSchemaType.KEYWORD,
    "integer": models.PayloadSchemaType.INTEGER,
    "float": models.PayloadSchemaType.FLOAT,
    "bool": models.PayloadSchemaType.BOOL,
}


class _QdrantStore(abc.ABC):
    """The port over one ``AsyncQdrantClient``; subclasses say how it is made and run."""

    _mode: Literal["local", "server"]

    def __init__(self) -> None:
        self._client: AsyncQdrantClient | None = None
        self._closed = False
        self._start_lock = asyncio.Lock()
        # Only a local store may cache schemas: it is the folder's one user.
        self._schemas: dict[str, Schema] = {}

    # -- how the client is made and called (the subclasses) ---------------------------------

    @abc.abstractmethod
    async def _open(self) -> AsyncQdrantClient:
        """A new client: local mode on its folder, or a server connection."""

    async def _run(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        return await work()

    async def _shut(self, client: AsyncQdrantClient) -> None:
        await client.close()

    def _unavailable(self, exc: BaseException) -> ApiError:
        return ServiceUnavailable(f"the vector store failed: {exc}", code="vectors_unavailable")

    # -- collections ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the client (otherwise done on first use)."""
        await self._ready()

    async def create_collection(
        self,
        name: str,
        dim: int,
        distance: Distance,
        fields: Mapping[str, FieldType] | None = None,
    ) -> None:
        declared = validate_collection(name, dim, distance, fields)
        client = await self._ready()

        async def create() -> None:
            if await client.collection_exists(name):
                raise _exists(name)
            await client.create_collection(
                name,
                vectors_config=models.VectorParams(size=dim, distance=_DISTANCES[distance]),
                metadata={"noa": {"fields": declared}},
            )
            if self._mode == "local":
                return  # local mode has no payload indexes (and warns when asked for one)
            try:
                for field, kind in declared.items():
                    await client.create_payload_index(name, field, _INDEX_TYPES[kind], wait=True)
            except BaseException:
                await client.delete_collection(name)
                raise

        await self._call(create, name)
        self._schemas[name] = Schema(dim, distance, declared)

    async def collection_info(self, name: str) -> CollectionInfo:
        schema = await self._schema(name)
        return CollectionInfo(
            name=name,
            dim=schema.dim,
            distance=schema.distance,
            fields=dict(schema.fields),
            count=await self.count(name),
        )

    async def delete_collection(self, name: str) -> bool:
        client = await self._ready()
        self._schemas.pop(name, None)
        if not isinstance(name, str) or not COLLECTION_NAME_PATTERN.fullmatch(name):
            return False
        return await self._call(lambda: client.delete_collection(name), name)

    async def list_collections(self) -> list[str]:
        client = await self._ready()
        found = await self._call(client.get_collections)
        return sorted(c.name for c in found.collections)

    # -- points -----------------------------------------------------------------------------

    async def upsert(self, collection: str, points: Sequence[Point]) -> None:
        schema = await self._schema(collection)
        if not points:
            return
        structs = checked_batch(schema, points)
        client = await self._ready()
        await self._call(lambda: client.upsert(collection, structs, wait=True), collection)

    async def search(
        self,
        collection: str,
        vector: Sequence[float],
        top_k: int,
        filter: Mapping[str, Any] | None = None,
    ) -> list[ScoredPoint]:
        schema = await self._schema(collection)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise BadRequest(f"top_k must be a positive integer, got {top_k!r}", param="top_k")
        query = vector_of(schema, vector, "the query vector")
        validate_filter(schema.fields, filter)
        where = qdrant_filter(schema.fields, filter) if filter else None
        if where is False:
            return []  # a condition no stored value can meet
        client = await self._ready()
        found = await self._call(
            lambda: client.query_points(
                collection,
                query=query,
                limit=top_k,
                query_filter=where,
                with_payload=True,
                with_vectors=False,
            ),
            collection,
        )
        hits = []
        for hit in found.points:
            payload = dict(hit.payload or {})
            point_id = payload.pop(ID_KEY, str(hit.id))
            hits.append(ScoredPoint(id=point_id, score=float(hit.score), payload=payload))
        return hits

    async def delete(self, collection: str, ids: Sequence[str]) -> int:
        await self._schema(collection)
        if isinstance(ids, str):
            raise BadRequest("ids must be a list of point ids, not one string", param="ids")
        keys = list(dict.fromkeys(point_key(str(i)) for i in ids))
        if not keys:
            return 0
        client = await self._ready()

        async def delete() -> int:
            existing = await client.retrieve(
                collection, keys, with_payload=False, with_vectors=False
            )
            if existing:
                selector = models.PointIdsList(points=[p.id for p in existing])
                await client.delete(collection, selector, wait=True)
            return len(existing)

        return await self._call(delete, collection)

    async def count(self, collection: str) -> int:
        await self._schema(collection)
        client = await self._ready()
        found = await self._call(lambda: client.count(collection, exact=True), collection)
        return found.count

    # -- the store --------------------------------------------------------------------------

    async def ping(self) -> bool:
        if self._closed:
            return False
        try:
            await self.list_collections()
        except ApiError:
            return False
        return True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        client, self._client = self._client, None
        self._schemas.clear()
        if client is not None:
            await self._shut(client)

    async def _ready(self) -> AsyncQdrantClient:
        if self._closed:
            raise ServiceUnavailable("the vector store is closed", code="vectors_closed")
        if self._client is None:
            async with self._start_lock:
                if self._client is None:
                    self._client = await self._open()
        return self._client

    async def _call(self, work: Callable[[], Awaitable[T]], collection: str | None = None) -> T:
        """Run ``work`` on the client, its failures translated into the port's errors."""

        async def wrapped() -> T:
            return await work()

        try:
            return await self._run(wrapped)
        except ApiError:
            raise
        except UnexpectedResponse as exc:
            if exc.status_code == 404 and collection is not None:
                self._schemas.pop(collection, None)
                raise _not_found(collection) from None
            if exc.status_code == 409 and collection is not None:
                raise _exists(collection) from None
            raise self._unavailable(exc) from exc
        except ValueError as exc:  # local mode's way of saying both
            if collection is not None and "not found" in str(exc):
                self._schemas.pop(collection, None)
                raise _not_found(collection) from None
            if collection is not None and "already exists" in str(exc):
                raise _exists(collection) from None
            raise
        except (ResponseHandlingException, OSError) as exc:
            raise self._unavailable(exc) from exc

    async def _schema(self, name: str) -> Schema:
        cached = self._schemas.get(name)
        if cached is not None:
            return cached
        if not isinstance(name, str) or not COLLECTION_NAME_PATTERN.fullmatch(name):
            raise _not_found(name)
        client = await self._ready()
        found = await self._call(lambda: client.get_collection(name), name)
        params = found.config.params.vectors
        if not isinstance(params, models.VectorParams) or params.distance not in _NOA_DISTANCES:
            raise Unprocessable(
                f"collection {name!r} was not made by NOA: it needs one unnamed vector of "
                "cosine, dot or euclid distance",
                code="foreign_collection",
            )
        meta = (found.config.metadata or {}).get("noa") or {}
        fields = validate_fields(meta.get("fields") or {})
        schema = Schema(params.size, _NOA_DISTANCES[params.distance], fields)
        if self._mode == "local":
            self._schemas[name] = schema
        return schema


class QdrantLocalStore(_QdrantStore):
    """qdrant-client's embedded local mode, in files under ``path``."""

    _mode = "local"

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock_fd = -1

    @classmethod
    def from_config(cls, config: RetrievalConfig, data_dir: str) -> QdrantLocalStore:
        return cls(config.qdrant_path or str(Path(data_dir) / "qdrant"))

    async def _open(self) -> AsyncQdrantClient:
        # Our own lock first: qdrant-client leaks its lock file's handle when it finds the
        # folder taken, and says so in a RuntimeError any other failure could raise too.
        self._lock_fd = await asyncio.to_thread(self._lock_folder)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="noa-qdrant-local", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread

        async def make() -> AsyncQdrantClient:
            return AsyncQdrantClient(path=str(self.path))

        try:
            return await self._run(make)
        except BaseException:
            await self._stop_thread()
            raise

    def _lock_folder(self) -> int:
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / ".noa.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise PluginStartError(
                "retrieval",
                f"the qdrant-local store {self.path} is in use by another process; it "
                "serves one process: run one worker ([server] workers = 1) or use the "
                "qdrant driver",
            ) from None
        return fd

    async def _run(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        assert self._loop is not None
        done: Future[T] = asyncio.run_coroutine_threadsafe(work(), self._loop)
        return await asyncio.wrap_future(done)

    async def _shut(self, client: AsyncQdrantClient) -> None:
        try:
            await self._run(client.close)
        finally:
            await self._stop_thread()

    async def _stop_thread(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            await asyncio.to_thread(thread.join)
            loop.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1


class QdrantServerStore(_QdrantStore):
    """A Qdrant server by URL (REST), with an optional API key."""

    _mode = "server"

    def __init__(self, url: str, api_key: str = "", *, timeout_s: int = 10) -> None:
        super().__init__()
        self.url = url
        self.timeout_s = timeout_s
        self._api_key = api_key

    @classmethod
    def from_config(cls, config: RetrievalConfig, data_dir: str) -> QdrantServerStore:
        return cls(
            config.qdrant_url.reveal(),
            config.qdrant_api_key.reveal(),
            timeout_s=config.qdrant_timeout_s,
        )

    async def _open(self) -> AsyncQdrantClient:
        insecure = self._api_key and self.url.startswith("http://")
        if insecure:
            log.warning("the Qdrant API key is sent to %s over plain http", _safe_url(self.url))
        with warnings.catch_warnings():
            # Said once above, in the log; the version probe would warn from a thread.
            warnings.filterwarnings("ignore", "Api key is used with an insecure connection")
            return AsyncQdrantClient(
                url=self.url,
                api_key=self._api_key or None,
                timeout=self.timeout_s,
                check_compatibility=False,
            )

    def _unavailable(self, exc: BaseException) -> ApiError:
        cause = getattr(exc, "source", None) or exc
        if isinstance(exc, UnexpectedResponse) and exc.status_code in (401, 403):
            cause = "it refused the API key (set retrieval.qdrant_api_key)"
        return ServiceUnavailable(
            f"the Qdrant server at {_safe_url(self.url)} is unreachable or failing: {cause}",
            code="vectors_unavailable",
        )


def _safe_url(url: str) -> str:
    """The URL without any credentials written into it."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    return f"{scheme}://{rest.rpartition('@')[2]}"


def _not_found(name: str) -> NotFound:
    return NotFound(f"no collection named {name!r}", code="collection_not_found")


def _exists(name: str) -> Conflict:
    return Conflict(f"collection {name!r} already exists", code="collection_exists")
