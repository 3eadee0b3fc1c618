"""The ``[storage]`` config section."""

from __future__ import annotations

from typing import Annotated

import msgspec
from noa.plugin_sdk import PluginConfig, Secret

__all__ = ["StorageConfig"]

Positive = Annotated[float, msgspec.Meta(gt=0)]


class StorageConfig(PluginConfig, frozen=True):
    # SQLite database file ([drivers] storage = "sqlite"); empty: <server.data_dir>/noa.sqlite3.
    sqlite_path: str = ""
    # How long a SQLite write waits for another process's write to finish.
    sqlite_busy_timeout_s: Positive = 5.0
    # The PostgreSQL database ([drivers] storage = "postgres"). Write {env = "DATABASE_URL"}
    # when it carries a password.
    postgres_url: Secret = Secret("postgresql://127.0.0.1:5432/noa")
    pool_min_size: Annotated[int, msgspec.Meta(ge=0)] = 1
    pool_max_size: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
    # Longest a request waits for a free connection before it gets 503.
    acquire_timeout_s: Positive = 5.0
    # A connection unused this long is closed.
    idle_timeout_s: Positive = 300.0
    # Every connection is replaced after at most this long (e.g. to follow a failover).
    max_lifetime_s: Positive = 3600.0
    # Longest one statement may run.
    statement_timeout_s: Positive = 30.0
    # Apply pending migrations once, in the `noa serve` parent, before workers start.
    # Otherwise run `noa migrate apply` as a deployment step.
    migrate_on_start: bool = False
