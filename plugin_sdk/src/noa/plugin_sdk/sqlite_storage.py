"""``SqliteStorage``: a :class:`~noa.plugin_sdk.ports.StoragePort` on the standard
library's SQLite, in memory or in a file.

It is the base of the ``sqlite`` driver of the storage slot (the embedded profile, which
adds WAL and a busy timeout for several worker processes) and the reference driver the
SDK's storage contract is checked against. Every
call runs on one worker thread so statements reach the connection one at a time and in
order, and the event loop never blocks on the database. A transaction holds a lock that
keeps other tasks' statements out until it ends, which makes transactions serialisable.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

from noa.plugin_sdk.errors import Conflict
from noa.plugin_sdk.ports.storage import SqlRunner

__all__ = ["SqliteStorage", "translate_placeholders"]

T = TypeVar("T")

# String literals, quoted identifiers and comments, which keep their `$n` as text; or
# a `$n` placeholder.
_TOKENS = re.compile(
    r"""('(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/)|\$(\d+)""",
    re.DOTALL,
)
_CONFLICTS = frozenset({"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"})

_Mode = Literal["count", "all", "one"]


def translate_placeholders(sql: str) -> str:
    """Rewrite PostgreSQL's ``$1`` placeholders to SQLite's numbered ``?1``.

    Both bind by position and allow a number to repeat, so only the sigil changes.
    """
    return _TOKENS.sub(lambda m: m.group(1) or f"?{m.group(2)}", sql)


class SqliteStorage:
    """SQLite through the storage port; ``database`` is ``":memory:"`` or a file path."""

    #: How a transaction starts; a file shared by processes wants "BEGIN IMMEDIATE", so a
    #: transaction takes the write lock up front (waiting on the busy timeout) instead of
    #: failing when it first writes.
    begin_statement = "BEGIN"

    def __init__(self, database: str = ":memory:") -> None:
        self._conn = sqlite3.connect(database, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="noa-sqlite")
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None
        self._closed = False

    async def execute(self, sql: str, *params: Any) -> int:
        count: int = await self._locked(sql, params, "count")
        return count

    async def fetch(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self._locked(sql, params, "all")
        return rows

    async def fetch_one(self, sql: str, *params: Any) -> dict[str, Any] | None:
        row: dict[str, Any] | None = await self._locked(sql, params, "one")
        return row

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlRunner]:
        self._refuse_own_task()
        async with self._lock:
            self._owner = asyncio.current_task()
            handle = _Transaction(self)
            try:
                await self._call(self._conn.execute, self.begin_statement)
                try:
                    yield handle
                except BaseException:
                    await self._call(self._conn.execute, "ROLLBACK")
                    raise
                await self._call(self._conn.execute, "COMMIT")
            finally:
                handle.finished = True
                self._owner = None

    async def ping(self) -> bool:
        try:
            row = await self.fetch_one("SELECT 1 AS ok")
        except sqlite3.Error:
            return False
        return row == {"ok": 1}

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        async with self._lock:
            await self._call(self._conn.close)
        self._thread.shutdown(wait=False)

    async def _locked(self, sql: str, params: Sequence[Any], mode: _Mode) -> Any:
        self._refuse_own_task()
        async with self._lock:
            return await self._call(self._run, sql, params, mode)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _refuse_own_task(self) -> None:
        # The lock is not re-entrant: waiting for it inside our own transaction would hang.
        if self._owner is not None and self._owner is asyncio.current_task():
            raise RuntimeError(
                "this task holds an open transaction: run the statement through the "
                "handle `async with storage.transaction() as tx` gave you"
            )

    def _run(self, sql: str, params: Sequence[Any], mode: _Mode) -> Any:
        try:
            cursor = self._conn.execute(translate_placeholders(sql), tuple(params))
        except sqlite3.IntegrityError as exc:
            if getattr(exc, "sqlite_errorname", "") in _CONFLICTS:
                raise Conflict(str(exc), code="unique_violation") from exc
            raise
        try:
            if mode == "count":
                return max(cursor.rowcount, 0)
            names = [column[0] for column in cursor.description or ()]
            if mode == "one":
                row = cursor.fetchone()
                return None if row is None else dict(zip(names, row, strict=True))
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            cursor.close()


class _Transaction:
    """The handle of one open transaction; its statements skip the lock it holds."""

    def __init__(self, storage: SqliteStorage) -> None:
        self._storage = storage
        self.finished = False

    async def execute(self, sql: str, *params: Any) -> int:
        count: int = await self._call(sql, params, "count")
        return count

    async def fetch(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self._call(sql, params, "all")
        return rows

    async def fetch_one(self, sql: str, *params: Any) -> dict[str, Any] | None:
        row: dict[str, Any] | None = await self._call(sql, params, "one")
        return row

    async def _call(self, sql: str, params: Sequence[Any], mode: _Mode) -> Any:
        if self.finished:
            raise RuntimeError("the transaction has ended; open a new one")
        storage = self._storage
        return await storage._call(storage._run, sql, params, mode)
