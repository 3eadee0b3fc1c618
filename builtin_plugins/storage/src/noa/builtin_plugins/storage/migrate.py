"""Schema migrations with piccolo, for every plugin that owns tables.

A plugin registers its piccolo app through ``noa_register_migrations``:
``migrations.add("notes", "my_plugin.piccolo_app")``, a module whose ``APP_CONFIG`` is a
``piccolo.conf.apps.AppConfig`` pointing at its migrations folder. Migrations are
written with piccolo's ``MigrationManager`` (``add_table``, ``add_column`` ...), so one
migration is valid on SQLite and PostgreSQL. Each migration runs in a transaction: one
that fails leaves the schema as it was, and nothing after it runs.

piccolo reads its database from the module named by ``PICCOLO_CONF``; :class:`Migrator`
provides one built from NOA's ``[storage]`` config for the time it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import os
import sys
import types
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
from noa.builtin_plugins.storage.config import StorageConfig

__all__ = ["AppStatus", "MigrationError", "Migrator", "make_engine"]

_CONF_MODULE = "noa_builtin_storage_piccolo_conf"
# The advisory lock key migrations hold on PostgreSQL (any constant bigint).
_MIGRATION_LOCK = 0x4E4F_414D_4947


class MigrationError(Exception):
    """A migration failed; its transaction was rolled back."""


class AppStatus(msgspec.Struct, frozen=True):
    app: str
    applied: list[str]
    pending: list[str]


def make_engine(driver: str, config: StorageConfig, data_dir: str) -> Any:
    """The piccolo engine for the database the storage driver uses."""
    if driver == "sqlite":
        from piccolo.engine.sqlite import SQLiteEngine

        path = Path(config.sqlite_path or Path(data_dir) / "noa.sqlite3")
        path.parent.mkdir(parents=True, exist_ok=True)
        return SQLiteEngine(path=str(path))
    if driver == "postgres":
        from piccolo.engine.postgres import PostgresEngine

        return PostgresEngine(config={"dsn": config.postgres_url.reveal()}, log_queries=False)
    raise ValueError(f"no migrations for the storage driver {driver!r} (sqlite, postgres)")


class Migrator:
    """Applies, lists and rolls back the registered apps' migrations, in plugin order."""

    def __init__(self, engine: Any, apps: Mapping[str, str]) -> None:
        self._engine = engine
        self._apps = dict(apps)  # app name -> piccolo_app module path

    @contextlib.contextmanager
    def _piccolo(self) -> Iterator[Any]:
        from piccolo.apps.migrations.tables import Migration
        from piccolo.conf.apps import AppRegistry

        conf = types.ModuleType(_CONF_MODULE)
        conf.DB = self._engine  # type: ignore[attr-defined]
        conf.APP_REGISTRY = AppRegistry(apps=list(self._apps.values()))  # type: ignore[attr-defined]
        previous = os.environ.get("PICCOLO_CONF")
        sys.modules[_CONF_MODULE] = conf
        os.environ["PICCOLO_CONF"] = _CONF_MODULE
        Migration._meta.db = self._engine
        # piccolo narrates on stdout; NOA's commands print their own summary.
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                yield conf.APP_REGISTRY
            finally:
                del sys.modules[_CONF_MODULE]
                if previous is None:
                    os.environ.pop("PICCOLO_CONF", None)
                else:
                    os.environ["PICCOLO_CONF"] = previous

    async def status(self) -> list[AppStatus]:
        from piccolo.apps.migrations.commands.base import BaseMigrationManager
        from piccolo.apps.migrations.tables import Migration

        with self._piccolo() as registry:
            manager = BaseMigrationManager()
            await manager.create_migration_table()
            result = []
            for app in self._apps:
                folder = registry.get_app_config(app).resolved_migrations_folder_path
                known = manager.get_migration_ids(manager.get_migration_modules(folder))
                ran = await Migration.get_migrations_which_ran(app_name=app)
                result.append(
                    AppStatus(
                        app=app,
                        applied=[m for m in known if m in ran],
                        pending=[m for m in known if m not in ran],
                    )
                )
            return result

    @contextlib.asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        """One process migrates a database at a time: servers started together (two
        hosts, a rolling deploy) wait for each other instead of racing to create the
        same tables. PostgreSQL: a session advisory lock; SQLite: a lock file beside
        the database."""
        dsn = getattr(self._engine, "config", {}).get("dsn")
        if dsn:
            import asyncpg

            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
                yield
            finally:
                await conn.close()  # ends the session, which releases the lock
            return
        path = getattr(self._engine, "path", None)
        if not path:
            yield
            return
        fd = os.open(f"{path}.migrate.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    async def apply(self) -> dict[str, list[str]]:
        """Run every pending migration; the ids applied, by app. Several processes may
        call it at once: they take turns, and the later ones find nothing pending."""
        async with self._exclusive():
            return await self._apply()

    async def _apply(self) -> dict[str, list[str]]:
        from piccolo.apps.migrations.commands.forwards import run_forwards

        before = {s.app: s.pending for s in await self.status()}
        applied: dict[str, list[str]] = {}
        for app in self._apps:
            if not before[app]:
                continue
            with self._piccolo():
                try:
                    result = await run_forwards(app_name=app)
                except Exception as exc:
                    raise MigrationError(
                        f"migration of app {app!r} failed and was rolled back: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
            if not result.success:
                raise MigrationError(f"migration of app {app!r} failed: {result.message}")
            after = {s.app: s.pending for s in await self.status()}
            applied[app] = [m for m in before[app] if m not in after[app]]
        return applied

    async def rollback(self, app: str) -> str | None:
        """Reverse the latest applied migration of ``app``; its id, or None if none ran."""
        from piccolo.apps.migrations.commands.backwards import run_backwards

        if app not in self._apps:
            raise MigrationError(f"no app {app!r} has migrations (apps: {', '.join(self._apps)})")
        status = next(s for s in await self.status() if s.app == app)
        if not status.applied:
            return None
        with self._piccolo():
            try:
                result = await run_backwards(app_name=app, migration_id="1", auto_agree=True)
            except Exception as exc:
                raise MigrationError(
                    f"rolling back {status.applied[-1]} of app {app!r} failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        if not result.success:
            raise MigrationError(f"rolling back app {app!r} failed: {result.message}")
        return status.applied[-1]
