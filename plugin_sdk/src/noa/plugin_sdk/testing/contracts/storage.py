"""The contract every ``noa.drivers.storage`` driver passes.

Subclass :class:`StorageContract` and implement :meth:`~StorageContract.make_driver`.
Each test creates its own table under a random name and drops it afterwards, so the
suite can run against a shared PostgreSQL database. The SQL is the dialect SQLite and
PostgreSQL share, with ``$n`` placeholders.
"""

from __future__ import annotations

import abc
import uuid
from collections.abc import AsyncIterator

import pytest
from noa.plugin_sdk.errors import Conflict
from noa.plugin_sdk.ports.storage import SqlRunner, StoragePort

__all__ = ["StorageContract"]


class _Rollback(Exception):
    """Raised inside a transaction block to make it roll back."""


class StorageContract(abc.ABC):
    """Behaviour shared by every storage driver."""

    @abc.abstractmethod
    async def make_driver(self) -> StoragePort:
        """A new storage of the driver under test, connected to a database it may write."""

    @pytest.fixture
    async def driver(self) -> AsyncIterator[StoragePort]:
        storage = await self.make_driver()
        try:
            yield storage
        finally:
            await storage.close()

    @pytest.fixture
    async def table(self, driver: StoragePort) -> AsyncIterator[str]:
        name = f"contract_{uuid.uuid4().hex[:12]}"
        await driver.execute(
            f"CREATE TABLE {name} ("
            "id BIGINT PRIMARY KEY, name TEXT NOT NULL, score DOUBLE PRECISION, data BYTEA)"
        )
        try:
            yield name
        finally:
            await driver.execute(f"DROP TABLE IF EXISTS {name}")

    async def _insert(self, runner: SqlRunner, table: str, *ids: int) -> None:
        for row_id in ids:
            await runner.execute(
                f"INSERT INTO {table} (id, name) VALUES ($1, $2)", row_id, f"row {row_id}"
            )

    async def _ids(self, runner: SqlRunner, table: str) -> list[int]:
        return [row["id"] for row in await runner.fetch(f"SELECT id FROM {table} ORDER BY id")]

    async def test_satisfies_the_port(self, driver: StoragePort) -> None:
        assert isinstance(driver, StoragePort)

    async def test_insert_counts_rows(self, driver: StoragePort, table: str) -> None:
        one = await driver.execute(
            f"INSERT INTO {table} (id, name, score) VALUES ($1, $2, $3)", 1, "a", 0.5
        )
        # Twelve parameters: $1 must not be read as the start of $10, $11, $12.
        values = ", ".join(f"(${n * 3 + 1}, ${n * 3 + 2}, ${n * 3 + 3})" for n in range(4))
        params = [v for n in range(2, 6) for v in (n, f"row {n}", n / 4)]
        four = await driver.execute(
            f"INSERT INTO {table} (id, name, score) VALUES {values}", *params
        )
        assert (one, four) == (1, 4)
        rows = await driver.fetch(f"SELECT id, name, score FROM {table} ORDER BY id")
        assert rows[1:] == [{"id": n, "name": f"row {n}", "score": n / 4} for n in range(2, 6)]

    async def test_fetch_returns_dicts_with_typed_values(
        self, driver: StoragePort, table: str
    ) -> None:
        blob = bytes(range(256))
        await driver.execute(
            f"INSERT INTO {table} (id, name, score, data) VALUES ($1, $2, $3, $4)",
            7,
            "ünïcode 'quoted'",
            -1.25,
            blob,
        )
        await driver.execute(f"INSERT INTO {table} (id, name) VALUES ($1, $2)", 8, "nulls")
        rows = await driver.fetch(f"SELECT id, name, score, data FROM {table} ORDER BY id")
        assert rows == [
            {"id": 7, "name": "ünïcode 'quoted'", "score": -1.25, "data": blob},
            {"id": 8, "name": "nulls", "score": None, "data": None},
        ]
        assert isinstance(rows[0]["data"], bytes)

    async def test_fetch_of_nothing_is_empty(self, driver: StoragePort, table: str) -> None:
        assert await driver.fetch(f"SELECT * FROM {table}") == []
        assert await driver.fetch_one(f"SELECT * FROM {table}") is None

    async def test_fetch_one_returns_the_first_row(self, driver: StoragePort, table: str) -> None:
        await self._insert(driver, table, 3, 1, 2)
        row = await driver.fetch_one(f"SELECT id, name FROM {table} ORDER BY id DESC")
        assert row == {"id": 3, "name": "row 3"}
        missing = await driver.fetch_one(f"SELECT id FROM {table} WHERE id = $1", 99)
        assert missing is None

    async def test_update_and_delete_count_rows(self, driver: StoragePort, table: str) -> None:
        await self._insert(driver, table, 1, 2, 3)
        assert await driver.execute(f"UPDATE {table} SET score = $1 WHERE id >= $2", 9.0, 2) == 2
        assert await driver.execute(f"UPDATE {table} SET score = $1 WHERE id = $2", 1.0, 42) == 0
        assert await driver.execute(f"DELETE FROM {table} WHERE id = $1", 1) == 1
        assert await driver.execute(f"DELETE FROM {table} WHERE id = $1", 1) == 0
        assert await self._ids(driver, table) == [2, 3]

    async def test_placeholders_repeat_and_skip_literals(
        self, driver: StoragePort, table: str
    ) -> None:
        await driver.execute(f"INSERT INTO {table} (id, name) VALUES ($1, 'costs $1')", 5)
        await self._insert(driver, table, 6)
        rows = await driver.fetch(
            f"SELECT id, name FROM {table} WHERE id = $1 OR id = $1 + $2 ORDER BY id", 5, 1
        )
        assert rows == [{"id": 5, "name": "costs $1"}, {"id": 6, "name": "row 6"}]

    async def test_transaction_commits_when_the_block_ends(
        self, driver: StoragePort, table: str
    ) -> None:
        async with driver.transaction() as tx:
            await self._insert(tx, table, 1, 2)
            assert await self._ids(tx, table) == [1, 2]
            row = await tx.fetch_one(f"SELECT name FROM {table} WHERE id = $1", 2)
            assert row == {"name": "row 2"}
        assert await self._ids(driver, table) == [1, 2]

    async def test_transaction_rolls_back_when_the_block_raises(
        self, driver: StoragePort, table: str
    ) -> None:
        await self._insert(driver, table, 1)

        async def change_then_fail() -> None:
            async with driver.transaction() as tx:
                await self._insert(tx, table, 2, 3)
                await tx.execute(f"DELETE FROM {table} WHERE id = $1", 1)
                assert await self._ids(tx, table) == [2, 3]
                raise _Rollback

        with pytest.raises(_Rollback):
            await change_then_fail()
        assert await self._ids(driver, table) == [1]

    async def test_storage_works_after_a_rollback(self, driver: StoragePort, table: str) -> None:

        async def insert_then_fail() -> None:
            async with driver.transaction() as tx:
                await self._insert(tx, table, 1)
                raise _Rollback

        with pytest.raises(_Rollback):
            await insert_then_fail()
        async with driver.transaction() as tx:
            await self._insert(tx, table, 2)
        await self._insert(driver, table, 3)
        assert await self._ids(driver, table) == [2, 3]

    async def test_duplicate_key_is_a_conflict(self, driver: StoragePort, table: str) -> None:
        await self._insert(driver, table, 1)
        with pytest.raises(Conflict):
            await self._insert(driver, table, 1)
        assert await self._ids(driver, table) == [1]

    async def test_conflict_inside_a_transaction_rolls_it_back(
        self, driver: StoragePort, table: str
    ) -> None:
        await self._insert(driver, table, 1)

        async def insert_duplicate() -> None:
            async with driver.transaction() as tx:
                await self._insert(tx, table, 2)
                await self._insert(tx, table, 1)

        with pytest.raises(Conflict):
            await insert_duplicate()
        assert await self._ids(driver, table) == [1]

    async def test_sql_errors_reach_the_caller(self, driver: StoragePort) -> None:
        missing = f"missing_{uuid.uuid4().hex[:12]}"
        with pytest.raises(Exception, match=missing):
            await driver.fetch(f"SELECT * FROM {missing}")
        assert await driver.ping() is True

    async def test_ping(self, driver: StoragePort) -> None:
        assert await driver.ping() is True

    async def test_close_twice_is_harmless(self) -> None:
        storage = await self.make_driver()
        assert await storage.ping() is True
        await storage.close()
        await storage.close()
