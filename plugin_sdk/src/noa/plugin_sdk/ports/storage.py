"""The ``storage`` driver slot: the relational database, one SQL statement at a time.

Drivers (``sqlite``, ``postgres``) register in the entry-point group
``noa.drivers.storage``. Tables and their migrations belong to the plugins that own
them; this port is the thin async layer those plugins and the contract tests run SQL
through.

SQL is written once for both engines. Parameters are positional and always written in
PostgreSQL style, ``$1, $2 ...`` (a number may repeat); a SQLite driver rewrites them to
SQLite's numbered ``?1, ?2 ...`` outside string literals. Parameter values are ``None``,
``bool``, ``int``, ``float``, ``str`` or ``bytes``. Keep to the shared dialect: column
types such as ``BIGINT``, ``TEXT``, ``DOUBLE PRECISION``, ``BYTEA`` mean the same thing
to both engines (SQLite reads a ``BOOLEAN`` back as an integer).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable

__all__ = ["STORAGE_STATE_KEY", "SqlRunner", "StoragePort"]

#: The ``host.state`` key under which the storage plugin offers the started :class:`StoragePort`.
STORAGE_STATE_KEY = "noa.storage"


@runtime_checkable
class SqlRunner(Protocol):
    """Runs SQL. Both the storage itself (each statement its own transaction) and the
    handle :meth:`StoragePort.transaction` yields are runners.

    A unique or primary-key violation raises :class:`~noa.plugin_sdk.errors.Conflict`;
    other database errors are the driver's own exceptions.
    """

    async def execute(self, sql: str, *params: Any) -> int:
        """Run one statement; the number of rows it inserted, updated or deleted
        (0 for statements that change no rows, such as DDL)."""
        ...

    async def fetch(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """Run one query; every row as a dict from column name to value, in order."""
        ...

    async def fetch_one(self, sql: str, *params: Any) -> dict[str, Any] | None:
        """Run one query; its first row, or ``None`` when it returned no row."""
        ...


@runtime_checkable
class StoragePort(SqlRunner, Protocol):
    """A relational database reached through a pool of connections."""

    def transaction(self) -> AbstractAsyncContextManager[SqlRunner]:
        """``async with storage.transaction() as tx:`` runs ``tx``'s statements in one
        transaction: committed when the block ends, rolled back if it raises (the error
        propagates). Only statements run through ``tx`` belong to it; do not nest them.
        """
        ...

    async def ping(self) -> bool:
        """``True`` when the database answers (the readiness check)."""
        ...

    async def close(self) -> None:
        """Close every connection. Calling it again does nothing."""
        ...
