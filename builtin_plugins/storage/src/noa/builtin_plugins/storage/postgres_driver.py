"""The ``postgres`` driver of the storage slot, on an asyncpg connection pool.

A database that cannot be reached (refused, restarting, no free connection within
``acquire_timeout_s``) is the server's problem, not the client's: those failures raise
:class:`ServiceUnavailable` (503, ``database_unavailable``) at once, and the pool
reconnects by itself when PostgreSQL is back. The pool is created lazily if PostgreSQL
is down at start-up, so the server starts and reports not ready until it is up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import asyncpg
from noa.builtin_plugins.storage.config import StorageConfig
from noa.plugin_sdk.errors import Conflict, ServiceUnavailable
from noa.plugin_sdk.ports.storage import SqlRunner

__all__ = ["PostgresStorage"]

T = TypeVar("T")

# Failures that mean "the database is not reachable now", not "your SQL is wrong".
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
)


def _rows_affected(status: str) -> int:
    # "INSERT 0 4", "UPDATE 3", "DELETE 1", "CREATE TABLE" -> 4, 3, 1, 0
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class _Runner:
    """Runs statements on one connection (a transaction's)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, *params: Any) -> int:
        return _rows_affected(await _translate(self._conn.execute(sql, *params)))

    async def fetch(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        return [dict(row) for row in await _translate(self._conn.fetch(sql, *params))]

    async def fetch_one(self, sql: str, *params: Any) -> dict[str, Any] | None:
        row = await _translate(self._conn.fetchrow(sql, *params))
        return None if row is None else dict(row)


async def _keep_session(conn: Any) -> None:
    """What a connection needs on its way back to the pool: nothing beyond the rollback
    of an unfinished transaction, which asyncpg does before calling this. Statements
    through this driver leave no session state (no SET, LISTEN, cursors or session
    advisory locks), so asyncpg's default reset (``RESET ALL; UNLISTEN *; ...``), one
    more round trip after every statement, would undo nothing."""


def _unavailable(
    exc: BaseException, what: str = "the database is unavailable"
) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"{what} ({type(exc).__name__}); retry shortly", code="database_unavailable"
    )


async def _translate(call: Awaitable[T]) -> T:
    try:
        return await call
    except asyncpg.exceptions.UniqueViolationError as exc:
        raise Conflict(str(exc), code="unique_violation") from exc
    except _UNAVAILABLE as exc:
        raise _unavailable(exc) from exc


class PostgresStorage:
    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        acquire_timeout_s: float = 5.0,
        idle_timeout_s: float = 300.0,
        max_lifetime_s: float = 3600.0,
        statement_timeout_s: float = 30.0,
    ) -> None:
        self._dsn = dsn
        self._min_size = min(min_size, max_size)
        self._max_size = max_size
        self._acquire_timeout = acquire_timeout_s
        self._idle_timeout = idle_timeout_s
        self._max_lifetime = max_lifetime_s
        self._timeout = statement_timeout_s
        self._pool: Any = None
        self._creating: asyncio.Lock | None = None
        self._recycler: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    def from_config(cls, config: StorageConfig, data_dir: str) -> PostgresStorage:
        dsn = config.postgres_url.reveal()
        if not dsn.startswith(("postgresql://", "postgres://")):
            raise ValueError("a PostgreSQL URL starts with postgresql:// or postgres://")
        return cls(
            dsn,
            min_size=config.pool_min_size,
            max_size=config.pool_max_size,
            acquire_timeout_s=config.acquire_timeout_s,
            idle_timeout_s=config.idle_timeout_s,
            max_lifetime_s=config.max_lifetime_s,
            statement_timeout_s=config.statement_timeout_s,
        )

    async def start(self) -> None:
        """Create the pool; if PostgreSQL is down, leave it for the first use."""
        with contextlib.suppress(ServiceUnavailable):
            await self._get_pool()
        self._recycler = asyncio.create_task(self._recycle())

    async def _get_pool(self) -> Any:
        if self._pool is not None:
            return self._pool
        if self._closed:
            raise ServiceUnavailable(
                "the database connection is closed", code="database_unavailable"
            )
        if self._creating is None:
            self._creating = asyncio.Lock()
        async with self._creating:
            if self._pool is None:
                self._pool = await _translate(
                    asyncpg.create_pool(
                        self._dsn,
                        min_size=self._min_size,
                        max_size=self._max_size,
                        max_inactive_connection_lifetime=self._idle_timeout,
                        command_timeout=self._timeout,
                        timeout=self._acquire_timeout,
                        reset=_keep_session,
                    )
                )
        return self._pool

    async def _recycle(self) -> None:
        # asyncpg has no maximum connection age: expire the whole pool on that period;
        # busy connections are replaced when released, idle ones on next use.
        while not self._closed:
            await asyncio.sleep(self._max_lifetime)
            if self._pool is not None:
                await self._pool.expire_connections()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        pool = self._pool or await self._get_pool()
        try:
            conn = await pool.acquire(timeout=self._acquire_timeout)
        except _UNAVAILABLE as exc:
            raise _unavailable(
                exc, f"no database connection within {self._acquire_timeout:g} s"
            ) from exc
        try:
            yield conn
        finally:
            with contextlib.suppress(Exception):
                await pool.release(conn)

    # The three one-statement calls are written out, not layered: they are the hot path.

    async def execute(self, sql: str, *params: Any) -> int:
        pool = self._pool or await self._get_pool()
        try:
            async with pool.acquire(timeout=self._acquire_timeout) as conn:
                status = await conn.execute(sql, *params)
        except asyncpg.exceptions.UniqueViolationError as exc:
            raise Conflict(str(exc), code="unique_violation") from exc
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc
        return _rows_affected(status)

    async def fetch(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        pool = self._pool or await self._get_pool()
        try:
            async with pool.acquire(timeout=self._acquire_timeout) as conn:
                rows = await conn.fetch(sql, *params)
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc
        return [dict(row) for row in rows]

    async def fetch_one(self, sql: str, *params: Any) -> dict[str, Any] | None:
        pool = self._pool or await self._get_pool()
        try:
            async with pool.acquire(timeout=self._acquire_timeout) as conn:
                row = await conn.fetchrow(sql, *params)
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc
        return None if row is None else dict(row)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlRunner]:
        async with self._connection() as conn:
            tx = conn.transaction()
            await _translate(tx.start())
            try:
                yield _Runner(conn)
            except BaseException:
                with contextlib.suppress(Exception):
                    await tx.rollback()
                raise
            await _translate(tx.commit())

    async def ping(self) -> bool:
        try:
            row = await self.fetch_one("SELECT 1 AS ok")
        except ServiceUnavailable:
            return False
        return row == {"ok": 1}

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._recycler is not None:
            self._recycler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recycler
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), 10)
            except TimeoutError:
                self._pool.terminate()
