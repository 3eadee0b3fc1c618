"""``PgVectorStore``: the ``pgvector`` driver of the ``vectors`` slot, collections as
PostgreSQL tables searched with the pgvector extension, over an asyncpg pool.

How collections map onto tables and filters onto SQL is in :mod:`.pgvector_sql`.

**Search.** With ``pgvector_index = "none"`` (the default) a collection has no vector
index: each search scans the rows its filter keeps (through the field indexes when the
filter is selective) and its results equal an exact search. With ``"hnsw"`` new
collections get an HNSW index, searched with ``hnsw.ef_search`` and pgvector 0.8's
relaxed iterative scan, which keeps walking the graph while a filter rejects rows; the
results are approximate, and a search that still comes back with fewer than ``top_k``
(a very selective filter, or a scan that hit its limit) is rerun exactly, so a filter
never loses matches to the index. Each collection keeps the index it was created with.

**Start.** :meth:`PgVectorStore.start` checks that the extension is enabled in the
database (enabling it when it is installed and the user may), under an advisory lock so
several workers can start together, and makes the schema and catalog. A missing
extension is a :class:`~noa.plugin_sdk.errors.PluginStartError` that says what to run
(``scripts/install-pgvector``). A database that does not answer at start is left for the
first call; until then ``ping()`` is ``False``.

**Errors.** An unknown collection is ``NotFound``, an existing one ``Conflict``; a
database that is unreachable, shutting down, out of resources or too slow
(``pgvector_timeout_s``) is ``ServiceUnavailable`` naming the driver and the server
(without credentials).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import asyncpg
import msgspec
from noa.builtin_plugins.retrieval.config import RetrievalConfig
from noa.builtin_plugins.retrieval.pgvector_sql import (
    CATALOG,
    HNSW_MAX_DIM,
    IndexKind,
    Layout,
    catalog_ddl,
    decode_vector,
    encode_vector,
    ident,
    score_of,
    search_sql,
    table_ddl,
    upsert_sql,
    vector_rows,
    where_clause,
)
from noa.builtin_plugins.retrieval.vector_checks import (
    checked_points,
    encoded_payload,
    matrix_of,
    vector_of,
)
from noa.plugin_sdk.config import Secret
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
    CollectionInfo,
    Distance,
    FieldType,
    Point,
    ScoredPoint,
    validate_collection,
    validate_fields,
    validate_filter,
)

__all__ = ["PgVectorStore"]

log = logging.getLogger("noa.retrieval")

# Rows sent in one statement of an upsert; a larger batch is several, in one transaction.
_CHUNK = 2000
# Iterative index scans, which keep filtered HNSW searches from coming back short.
_MIN_HNSW_VERSION = (0, 8, 0)
# Any number: the advisory lock that serialises start-up DDL across processes.
_SETUP_LOCK = 0x6E6F615F76656373
# SQLSTATE classes that mean the database can't serve now (connection, resources,
# operator intervention incl. a statement timeout, system error), not a wrong request.
_UNAVAILABLE_CLASSES = ("08", "53", "57", "58")
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.InterfaceError,
)
_PAYLOAD_DECODER = msgspec.json.Decoder(dict[str, Any])
# JSON's escape of U+0000: a backslash run of odd length, then u0000.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


class PgVectorStore:
    """Collections in a PostgreSQL database with the pgvector extension."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "noa_vectors",
        index: IndexKind = "none",
        ef_search: int = 400,
        pool_max_size: int = 10,
        timeout_s: float = 30.0,
    ) -> None:
        if not dsn.startswith(("postgresql://", "postgres://")):
            raise ValueError("a PostgreSQL URL starts with postgresql:// or postgres://")
        self._dsn = dsn
        self.url = _safe_url(dsn)
        self.schema = schema
        self.index: IndexKind = index
        self.ef_search = ef_search
        self.pool_max_size = pool_max_size
        self.timeout_s = timeout_s
        self._pool: Any = None
        self._start_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    def from_config(
        cls, config: RetrievalConfig, data_dir: str, *, storage_url: str | Secret = ""
    ) -> PgVectorStore:
        """The store ``[retrieval]`` describes. ``storage_url`` is ``storage.postgres_url``,
        used when ``pgvector_url`` is empty; the plugin reads it with
        ``host.section("storage", PluginConfig)``, as the storage plugin owns that section."""
        url = config.pgvector_url.reveal()
        if not url:
            url = storage_url.reveal() if isinstance(storage_url, Secret) else storage_url
        if not url:
            raise PluginStartError(
                "retrieval",
                "the pgvector driver needs a database: set retrieval.pgvector_url (or "
                "storage.postgres_url, with the storage plugin enabled)",
            )
        return cls(
            url,
            schema=config.pgvector_schema,
            index=config.pgvector_index,
            ef_search=config.pgvector_hnsw_ef_search,
            pool_max_size=config.pgvector_pool_max_size,
            timeout_s=config.pgvector_timeout_s,
        )

    async def start(self) -> None:
        """Check the extension and make the catalog (see the module docstring).

        Raises :class:`PluginStartError` when pgvector is missing or too old; a database
        that does not answer is left for the first call."""
        try:
            await self._ready(starting=True)
        except ServiceUnavailable as exc:
            log.warning("pgvector store not ready at start, will retry on first use: %s", exc)

    # -- collections ------------------------------------------------------------------------

    async def create_collection(
        self,
        name: str,
        dim: int,
        distance: Distance,
        fields: Mapping[str, FieldType] | None = None,
    ) -> None:
        declared = validate_collection(name, dim, distance, fields)
        index: IndexKind = self.index if dim <= HNSW_MAX_DIM else "none"
        layout = Layout(self.schema, name, dim, distance, list(declared.items()), index)
        pool = await self._ready()
        catalog = f"{ident(self.schema)}.{ident(CATALOG)}"
        async with self._connection(pool, name) as conn, conn.transaction():
            number = await conn.fetchval(
                f"INSERT INTO {catalog} (name, dim, distance, fields, vector_index) "
                "VALUES ($1, $2, $3, $4::jsonb, $5) ON CONFLICT (name) DO NOTHING RETURNING id",
                name,
                dim,
                distance,
                msgspec.json.encode(list(declared.items())).decode(),
                index,
            )
            if number is None:
                raise _exists(name)
            for statement in table_ddl(layout, number):
                await conn.execute(statement)

    async def collection_info(self, name: str) -> CollectionInfo:
        layout = await self._layout(name)
        return CollectionInfo(
            name=name,
            dim=layout.dim,
            distance=layout.distance,
            fields=dict(layout.fields),
            count=await self._count(layout),
        )

    async def delete_collection(self, name: str) -> bool:
        pool = await self._ready()
        if not isinstance(name, str) or not COLLECTION_NAME_PATTERN.fullmatch(name):
            return False
        catalog = f"{ident(self.schema)}.{ident(CATALOG)}"
        async with self._connection(pool) as conn, conn.transaction():
            gone = await conn.fetchval(f"DELETE FROM {catalog} WHERE name = $1 RETURNING 1", name)
            if gone is None:
                return False
            await conn.execute(f"DROP TABLE IF EXISTS {ident(self.schema)}.{ident(name)}")
        return True

    async def list_collections(self) -> list[str]:
        pool = await self._ready()
        async with self._connection(pool) as conn:
            rows = await conn.fetch(f"SELECT name FROM {ident(self.schema)}.{ident(CATALOG)}")
        return sorted(row["name"] for row in rows)

    # -- points -----------------------------------------------------------------------------

    async def upsert(self, collection: str, points: Sequence[Point]) -> None:
        layout = await self._layout(collection)
        if not points:
            return
        ids, vectors, payloads = await asyncio.to_thread(_encoded_batch, layout, points)
        sql = upsert_sql(layout)
        pool = await self._ready()
        async with self._connection(pool, collection) as conn, conn.transaction():
            for start in range(0, len(ids), _CHUNK):
                end = start + _CHUNK
                await conn.execute(sql, ids[start:end], vectors[start:end], payloads[start:end])

    async def search(
        self,
        collection: str,
        vector: Sequence[float],
        top_k: int,
        filter: Mapping[str, Any] | None = None,
    ) -> list[ScoredPoint]:
        layout = await self._layout(collection)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise BadRequest(f"top_k must be a positive integer, got {top_k!r}", param="top_k")
        query = vector_of(
            layout.dim, vector, "the query vector", normalise=layout.distance == "cosine"
        )
        validate_filter(layout.fields, filter)
        where = where_clause(layout, filter, first_param=3)
        if where is None:
            return []  # a condition no stored value can meet
        condition, params = where
        (blob,) = vector_rows(query[None, :])
        pool = await self._ready()
        async with self._connection(pool, collection) as conn:
            exact = layout.index == "none"
            rows = await conn.fetch(
                search_sql(layout, condition, exact=exact), blob, top_k, *params
            )
            if not exact and len(rows) < top_k:
                # The index ran out (a selective filter, the scan's limit): ask exactly.
                rows = await conn.fetch(
                    search_sql(layout, condition, exact=True), blob, top_k, *params
                )
        return [
            ScoredPoint(
                id=row["id"],
                score=score_of(layout.distance, row["d"]),
                payload=_PAYLOAD_DECODER.decode(row["payload"]),
            )
            for row in sorted(rows, key=_distance)
        ]

    async def delete(self, collection: str, ids: Sequence[str]) -> int:
        layout = await self._layout(collection)
        if isinstance(ids, str):
            raise BadRequest("ids must be a list of point ids, not one string", param="ids")
        # PostgreSQL text holds no NUL, so such an id was never stored.
        wanted = list({str(i) for i in ids if "\x00" not in str(i)})
        if not wanted:
            return 0
        pool = await self._ready()
        async with self._connection(pool, collection) as conn:
            status = await conn.execute(
                f"DELETE FROM {layout.table} WHERE id = ANY($1::text[])", wanted
            )
        return int(status.rsplit(" ", 1)[-1])

    async def count(self, collection: str) -> int:
        return await self._count(await self._layout(collection))

    # -- the store --------------------------------------------------------------------------

    async def ping(self) -> bool:
        if self._closed:
            return False
        try:
            pool = await self._ready()
            async with self._connection(pool) as conn:
                return bool(await conn.fetchval("SELECT true"))
        except ApiError:
            return False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 10)
            except TimeoutError:
                pool.terminate()

    # -- internals --------------------------------------------------------------------------

    async def _count(self, layout: Layout) -> int:
        pool = await self._ready()
        async with self._connection(pool, layout.name) as conn:
            return int(await conn.fetchval(f"SELECT count(*) FROM {layout.table}"))

    async def _layout(self, name: str) -> Layout:
        # Read on every call, never cached: another worker may drop and remake it.
        if not isinstance(name, str) or not COLLECTION_NAME_PATTERN.fullmatch(name):
            raise _not_found(name)
        pool = await self._ready()
        async with self._connection(pool, name) as conn:
            row = await conn.fetchrow(
                f"SELECT dim, distance, fields, vector_index FROM "
                f"{ident(self.schema)}.{ident(CATALOG)} WHERE name = $1",
                name,
            )
        if row is None:
            raise _not_found(name)
        pairs = msgspec.json.decode(row["fields"], type=list[tuple[str, Any]])
        fields = validate_fields(dict(pairs))
        return Layout(
            self.schema,
            name,
            row["dim"],
            row["distance"],
            list(fields.items()),
            row["vector_index"],
        )

    async def _ready(self, *, starting: bool = False) -> Any:
        if self._closed:
            raise ServiceUnavailable("the pgvector store is closed", code="vectors_closed")
        if self._pool is not None:
            return self._pool
        async with self._start_lock:
            if self._pool is None:
                try:
                    self._pool = await self._open()
                except PluginStartError as exc:
                    if starting:
                        raise
                    raise ServiceUnavailable(str(exc), code="vectors_unavailable") from exc
        return self._pool

    async def _open(self) -> Any:
        """Check the extension and make the catalog on one connection, then the pool."""
        try:
            conn = await asyncpg.connect(self._dsn, timeout=self.timeout_s)
        except asyncpg.exceptions.InvalidCatalogNameError as exc:
            raise self._start_error(f"the database does not exist ({exc})") from None
        except asyncpg.exceptions.InvalidAuthorizationSpecificationError as exc:
            raise self._start_error(f"it refused the login ({exc})") from None
        except (*_UNAVAILABLE, asyncpg.exceptions.PostgresError) as exc:
            raise self._unavailable(exc) from exc
        try:
            vector_schema, version = await self._prepare(conn)
        except (PluginStartError, ServiceUnavailable):
            raise
        except (*_UNAVAILABLE, asyncpg.exceptions.PostgresError) as exc:
            if isinstance(exc, asyncpg.exceptions.PostgresError) and not _is_outage(exc):
                raise self._start_error(f"preparing schema {self.schema!r} failed: {exc}") from exc
            raise self._unavailable(exc) from exc
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)
        settings = {
            # pgvector's type and operators, wherever the extension was created; every
            # table the driver touches is named with its schema.
            "search_path": ident(vector_schema),
            "application_name": "noa-retrieval-pgvector",
            # Plan each search for its own filter values: selectivity decides the plan.
            "plan_cache_mode": "force_custom_plan",
        }
        if _version(version) >= _MIN_HNSW_VERSION:
            # For every collection with an HNSW index, whatever pgvector_index says now.
            settings["hnsw.ef_search"] = str(self.ef_search)
            settings["hnsw.iterative_scan"] = "relaxed_order"

        async def init(connection: Any) -> None:
            await connection.set_type_codec(
                "vector",
                schema=vector_schema,
                encoder=encode_vector,
                decoder=decode_vector,
                format="binary",
            )

        try:
            return await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self.pool_max_size,
                timeout=self.timeout_s,
                command_timeout=self.timeout_s,
                server_settings=settings,
                init=init,
            )
        except (*_UNAVAILABLE, asyncpg.exceptions.PostgresError) as exc:
            raise self._unavailable(exc) from exc

    async def _prepare(self, conn: Any) -> tuple[str, str]:
        """Enable the extension if needed and make the schema and catalog; the schema
        pgvector's type lives in, and pgvector's version."""
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _SETUP_LOCK)
            found = await conn.fetchrow(
                "SELECT e.extversion, n.nspname FROM pg_extension e "
                "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
            )
            if found is None:
                installed = await conn.fetchval(
                    "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
                )
                if installed is None:
                    raise self._start_error(
                        "the pgvector extension is not installed on the database server: "
                        "run scripts/install-pgvector there as root (it builds pgvector for "
                        "the server's PostgreSQL), or install your distribution's "
                        "postgresql-<version>-pgvector package"
                    )
                try:
                    async with conn.transaction():
                        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                except asyncpg.exceptions.InsufficientPrivilegeError:
                    raise self._start_error(
                        "pgvector is installed but not enabled in this database, and this "
                        "user may not enable it: run CREATE EXTENSION vector; in the "
                        "database as a superuser"
                    ) from None
                found = await conn.fetchrow(
                    "SELECT e.extversion, n.nspname FROM pg_extension e JOIN pg_namespace n "
                    "ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
                )
            version, vector_schema = str(found["extversion"]), str(found["nspname"])
            try:
                async with conn.transaction():  # loads the library: is it still there?
                    await conn.execute(f"SELECT '[1]'::{ident(vector_schema)}.vector")
            except asyncpg.exceptions.UndefinedFileError:
                raise self._start_error(
                    "the pgvector extension is enabled in this database but its library is "
                    "missing from the server: run scripts/install-pgvector there as root"
                ) from None
            if self.index == "hnsw" and _version(version) < _MIN_HNSW_VERSION:
                raise self._start_error(
                    f"pgvector {version} is too old for retrieval.pgvector_index = 'hnsw' "
                    "(0.8.0 or newer keeps filtered searches complete): run "
                    "scripts/install-pgvector, then ALTER EXTENSION vector UPDATE;"
                )
            for statement in catalog_ddl(self.schema):
                await conn.execute(statement)
        return vector_schema, version

    @contextlib.asynccontextmanager
    async def _connection(self, pool: Any, collection: str | None = None) -> AsyncIterator[Any]:
        """A pooled connection; database failures inside become the port's errors."""
        try:
            async with pool.acquire(timeout=self.timeout_s) as conn:
                yield conn
        except ApiError:
            raise
        except asyncpg.exceptions.UndefinedTableError as exc:
            if collection is None:
                raise self._unavailable(exc) from exc
            raise _not_found(collection) from None  # dropped by another process meanwhile
        except (asyncpg.exceptions.UniqueViolationError, asyncpg.exceptions.DuplicateTableError):
            if collection is None:
                raise
            raise _exists(collection) from None
        except asyncpg.exceptions.PostgresError as exc:
            if _is_outage(exc):
                raise self._unavailable(exc) from exc
            raise
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: BaseException) -> ServiceUnavailable:
        cause = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            cause = f"no answer within {self.timeout_s:g} s (retrieval.pgvector_timeout_s)"
        return ServiceUnavailable(
            f"the pgvector store at {self.url} is unreachable or failing: {cause}",
            code="vectors_unavailable",
        )

    def _start_error(self, reason: str) -> PluginStartError:
        return PluginStartError("retrieval", f"the pgvector store at {self.url}: {reason}")


def _encoded_batch(
    layout: Layout, points: Sequence[Point]
) -> tuple[list[str], list[bytes], list[str]]:
    """Ids, vectors in pgvector's binary form and payloads as JSON text, of a batch that
    passed every check (the last of a repeated id wins)."""
    kept = checked_points(layout.fields, points)
    for point in kept:
        if "\x00" in point.id:
            raise BadRequest(
                f"point id {point.id!r} holds a NUL character, which PostgreSQL can't store",
                param="id",
            )
    matrix = matrix_of(layout.dim, kept, normalise=layout.distance == "cosine")
    payloads = []
    for point in kept:
        encoded = encoded_payload(point)
        if _NUL_ESCAPE.search(encoded):
            raise Unprocessable(
                f"point {point.id!r}: a payload string holds a NUL character (U+0000), "
                "which PostgreSQL text can't hold",
                param="payload",
            )
        payloads.append(encoded.decode())
    return [p.id for p in kept], vector_rows(matrix), payloads


def _distance(row: Any) -> float:
    return float(row["d"])


def _is_outage(exc: BaseException) -> bool:
    state = getattr(exc, "sqlstate", None) or ""
    return state[:2] in _UNAVAILABLE_CLASSES


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split("."):
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _safe_url(url: str) -> str:
    """The URL without credentials or query parameters (which may hold a password)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest = rest.rpartition("@")[2].split("?", 1)[0]
    return f"{scheme}://{rest}"


def _not_found(name: str) -> NotFound:
    return NotFound(f"no collection named {name!r}", code="collection_not_found")


def _exists(name: str) -> Conflict:
    return Conflict(f"collection {name!r} already exists", code="collection_exists")
