"""``noa migrate`` with a plugin that owns a table, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

PLUGIN = """
from noa.plugin_sdk import hookimpl

@hookimpl
def noa_register_migrations(migrations):
    migrations.add("{app}", "{package}.piccolo_app")
"""

APP = """
import os
from piccolo.conf.apps import AppConfig

APP_CONFIG = AppConfig(
    app_name="{app}",
    migrations_folder_path=os.path.join(os.path.dirname(__file__), "piccolo_migrations"),
)
"""

CREATE = """
from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns import Integer, Varchar

ID = "2026-11-23T10:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "notes table"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="{app}", description=DESCRIPTION)
    manager.add_table(class_name="Note", tablename="{table}")
    manager.add_column(
        table_class_name="Note", tablename="{table}", column_name="title",
        column_class=Varchar, params={{"length": 200, "default": ""}},
    )
    manager.add_column(
        table_class_name="Note", tablename="{table}", column_name="stars",
        column_class=Integer, params={{"default": 0}},
    )
    return manager
"""

BROKEN = """
from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns import Integer
from piccolo.engine import engine_finder

ID = "2026-11-24T10:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "adds a column, then fails"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="{app}", description=DESCRIPTION)
    manager.add_column(
        table_class_name="Note", tablename="{table}", column_name="late",
        column_class=Integer, params={{"default": 0}},
    )

    async def fail():
        await engine_finder().run_ddl("SELECT * FROM surely_no_such_table_anywhere")

    manager.add_raw(fail)
    return manager
"""


def notes_site(dist_factory: Any, app: str, table: str, *, broken: bool = False) -> Path:
    package = f"{app}_plugin"
    modules = {
        f"{package}.__init__": PLUGIN.format(app=app, package=package),
        f"{package}.piccolo_app": APP.format(app=app),
        f"{package}.piccolo_migrations.__init__": "",
        f"{package}.piccolo_migrations.{app}_2026_11_23t10_00_00_000000": CREATE.format(
            app=app, table=table
        ),
    }
    if broken:
        modules[f"{package}.piccolo_migrations.{app}_2026_11_24t10_00_00_000000"] = BROKEN.format(
            app=app, table=table
        )
    return dist_factory(f"noa-plugin-{app}", {"noa.plugins": {app: package}}, modules)


def sqlite_columns(path: Path, table: str) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
    finally:
        conn.close()


def test_apply_status_rollback_on_sqlite(noa_cli: Any, dist_factory: Any, tmp_path: Path) -> None:
    app = f"notes{uuid.uuid4().hex[:6]}"
    site = notes_site(dist_factory, app, "note")
    db = tmp_path / "data" / "noa.sqlite3"
    env = {"NOA_SERVER__DATA_DIR": str(tmp_path / "data")}

    pending = noa_cli("migrate", "status", "--json", pythonpath=[site], env=env)
    assert pending.returncode == 3, pending.stderr
    (row,) = [r for r in json.loads(pending.stdout) if r["app"] == app]
    assert (row["applied"], row["pending"]) == ([], ["2026-11-23T10:00:00:000000"])

    applied = noa_cli("migrate", "apply", pythonpath=[site], env=env)
    assert applied.returncode == 0, applied.stderr
    assert f"{app}: applied 2026-11-23T10:00:00:000000" in applied.stdout
    assert sqlite_columns(db, "note") == ["id", "title", "stars"]

    assert noa_cli("migrate", "status", pythonpath=[site], env=env).returncode == 0
    again = noa_cli("migrate", "apply", pythonpath=[site], env=env)
    assert "nothing to apply" in again.stdout

    back = noa_cli("migrate", "rollback", app, pythonpath=[site], env=env)
    assert back.returncode == 0, back.stderr
    assert f"{app}: rolled back 2026-11-23T10:00:00:000000" in back.stdout
    assert sqlite_columns(db, "note") == []


def test_a_failing_migration_leaves_the_schema_unchanged(
    noa_cli: Any, dist_factory: Any, tmp_path: Path
) -> None:
    app = f"notes{uuid.uuid4().hex[:6]}"
    site = notes_site(dist_factory, app, "note", broken=True)
    db = tmp_path / "data" / "noa.sqlite3"
    env = {"NOA_SERVER__DATA_DIR": str(tmp_path / "data")}
    result = noa_cli("migrate", "apply", pythonpath=[site], env=env)
    assert result.returncode == 1
    assert f"noa: error: migration of app {app!r} failed and was rolled back" in result.stderr
    assert "surely_no_such_table_anywhere" in result.stderr
    # The first migration stays applied; the failing one left no column behind.
    assert sqlite_columns(db, "note") == ["id", "title", "stars"]
    status = json.loads(noa_cli("migrate", "status", "--json", pythonpath=[site], env=env).stdout)
    (row,) = [r for r in status if r["app"] == app]
    assert row["pending"] == ["2026-11-24T10:00:00:000000"]


def test_serve_migrates_once_before_workers_start(
    serve: Any, dist_factory: Any, tmp_path: Path
) -> None:
    app = f"notes{uuid.uuid4().hex[:6]}"
    site = notes_site(dist_factory, app, "note")
    server = serve("--workers", "2", pythonpath=[site])  # embedded: migrate_on_start = true
    server.wait_ready()
    assert sqlite_columns(tmp_path / ".noa" / "noa.sqlite3", "note") == ["id", "title", "stars"]
    assert server.terminate() == 0


@pytest.mark.postgres
async def test_apply_and_rollback_on_postgres(noa_cli: Any, dist_factory: Any) -> None:
    app = f"notes{uuid.uuid4().hex[:6]}"
    table = f"note_{uuid.uuid4().hex[:8]}"
    site = notes_site(dist_factory, app, table)
    env = {
        "NOA_DRIVERS__STORAGE": "postgres",
        "NOA_STORAGE__POSTGRES_URL": "postgresql://127.0.0.1:5432/test",
    }
    conn = await asyncpg.connect("postgresql://127.0.0.1:5432/test")
    try:
        applied = noa_cli("migrate", "apply", pythonpath=[site], env=env)
        assert applied.returncode == 0, applied.stderr
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = $1 "
            "ORDER BY ordinal_position",
            table,
        )
        assert [c["column_name"] for c in columns] == ["id", "title", "stars"]
        back = noa_cli("migrate", "rollback", app, pythonpath=[site], env=env)
        assert back.returncode == 0, back.stderr
        assert await conn.fetchval("SELECT to_regclass($1)", table) is None
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.execute("DELETE FROM migration WHERE app_name = $1", app)
        await conn.close()


@pytest.mark.postgres
async def test_servers_migrating_one_fresh_database_at_once_take_turns() -> None:
    """Three migrators started together on an empty PostgreSQL database (servers of a
    deployment starting at once): one applies everything, the others find nothing left,
    and none fails on a table another just created."""
    from noa.builtin_plugins.storage.config import StorageConfig
    from noa.builtin_plugins.storage.migrate import Migrator, make_engine
    from noa.plugin_sdk.config import Secret

    apps = {
        "audit": "noa.builtin_plugins.audit.piccolo_app",
        "cache": "noa.builtin_plugins.cache.piccolo_app",
        "auth": "noa.builtin_plugins.auth.piccolo_app",
    }
    name = f"noatest_migrate_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect("postgresql://127.0.0.1:5432/test")
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = Secret(f"postgresql://127.0.0.1:5432/{name}")
        migrators = [
            Migrator(make_engine("postgres", StorageConfig(postgres_url=url), "/tmp"), apps)
            for _ in range(3)
        ]
        results = await asyncio.gather(*(m.apply() for m in migrators))
        assert sorted(map(len, results)) == [0, 0, 3]
        assert sum(len(ids) for r in results for ids in r.values()) == 3
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()
