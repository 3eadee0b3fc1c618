"""Both storage drivers pass the SDK's storage contract (PostgreSQL over the real
server); the plugin passes the plugin contract."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from noa.builtin_plugins.storage.postgres_driver import PostgresStorage
from noa.builtin_plugins.storage.sqlite_driver import SqliteDriver
from noa.plugin_sdk.ports.storage import StoragePort
from noa.plugin_sdk.testing.contracts import PluginContract, StorageContract

POSTGRES_URL = "postgresql://127.0.0.1:5432/test"


class TestSqliteDriver(StorageContract):
    async def make_driver(self) -> StoragePort:
        folder = Path(tempfile.mkdtemp(prefix="noa-sqlite-"))
        storage = SqliteDriver(str(folder / "db.sqlite3"))
        await storage.start()
        return storage


@pytest.mark.postgres
class TestPostgresDriver(StorageContract):
    async def make_driver(self) -> StoragePort:
        storage = PostgresStorage(POSTGRES_URL, min_size=1, max_size=4)
        await storage.start()
        return storage


class TestStoragePluginContract(PluginContract):
    plugin = "storage"
