"""The ``sqlite`` driver of the storage slot: the SDK's SQLite storage on a file, in WAL
mode with a busy timeout.

In one process every statement goes through one connection in order, so writers never
collide; several granian workers each have their own connection and wait for each other
(up to ``sqlite_busy_timeout_s``) instead of failing with "database is locked". WAL with
``synchronous=NORMAL`` keeps every committed transaction when the process is killed.
"""

from __future__ import annotations

from pathlib import Path

from noa.builtin_plugins.storage.config import StorageConfig
from noa.plugin_sdk.sqlite_storage import SqliteStorage

__all__ = ["SqliteDriver"]


class SqliteDriver(SqliteStorage):
    begin_statement = "BEGIN IMMEDIATE"

    def __init__(self, path: str, *, busy_timeout_s: float = 5.0) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        super().__init__(path)
        self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")

    @classmethod
    def from_config(cls, config: StorageConfig, data_dir: str) -> SqliteDriver:
        path = config.sqlite_path or str(Path(data_dir) / "noa.sqlite3")
        return cls(path, busy_timeout_s=config.sqlite_busy_timeout_s)

    async def start(self) -> None:
        return None
