"""SQLite under concurrent writers and SIGKILL; PostgreSQL out of reach."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest
from litestar import post
from litestar.params import FromPath
from noa.builtin_plugins.storage.postgres_driver import PostgresStorage
from noa.builtin_plugins.storage.sqlite_driver import SqliteDriver
from noa.plugin_sdk import Registry, RouteGroup, ServiceUnavailable, hookimpl
from noa.plugin_sdk.ports.storage import STORAGE_STATE_KEY


async def test_concurrent_writers_on_two_connections_never_see_locked(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite3")
    # Two connections to one file stand for two granian workers.
    one, two = SqliteDriver(path), SqliteDriver(path)
    await one.execute("CREATE TABLE IF NOT EXISTS hits (id BIGINT PRIMARY KEY, who TEXT)")

    async def write(storage: SqliteDriver, who: str, start: int) -> None:
        for i in range(start, start + 100):
            async with storage.transaction() as tx:
                await tx.execute("INSERT INTO hits (id, who) VALUES ($1, $2)", i, who)

    try:
        await asyncio.gather(
            *(write(one, "one", n * 100) for n in range(0, 4)),
            *(write(two, "two", n * 100) for n in range(4, 8)),
        )
        row = await one.fetch_one("SELECT COUNT(*) AS n FROM hits")
        assert row == {"n": 800}
    finally:
        await one.close()
        await two.close()


WRITER = """
import asyncio, sys
from noa.builtin_plugins.storage.sqlite_driver import SqliteDriver

async def main(path):
    storage = SqliteDriver(path)
    await storage.execute("CREATE TABLE IF NOT EXISTS t (id BIGINT PRIMARY KEY, pad TEXT)")
    i = 0
    while True:
        async with storage.transaction() as tx:
            await tx.execute("INSERT INTO t (id, pad) VALUES ($1, $2)", i, "x" * 200)
        print(i, flush=True)  # committed
        i += 1

asyncio.run(main(sys.argv[1]))
"""


def test_sigkill_during_writes_keeps_every_committed_row(tmp_path: Path) -> None:
    path = tmp_path / "killed.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    committed = -1
    deadline = time.monotonic() + 30
    while committed < 300 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            committed = int(line)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert committed >= 300, "the writer did not get going"
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        (count,) = conn.execute("SELECT COUNT(*) FROM t").fetchone()
        ids = {row[0] for row in conn.execute("SELECT id FROM t")}
    finally:
        conn.close()
    assert set(range(committed + 1)) <= ids  # every acknowledged commit survived
    assert count >= committed + 1


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_postgres_fails_fast_with_503_and_starts_anyway(noa_boot: Any) -> None:
    storage = PostgresStorage(f"postgresql://127.0.0.1:{closed_port()}/test", acquire_timeout_s=1)
    await storage.start()  # the server may start before its database
    try:
        # Fails, with the server's error, and does not hang.
        with pytest.raises(ServiceUnavailable) as caught:
            await asyncio.wait_for(storage.execute("SELECT 1"), 10)
        assert caught.value.code == "database_unavailable"
        assert await storage.ping() is False
    finally:
        await storage.close()

    module = types.ModuleType("notes")

    @hookimpl
    def noa_register_routes(routes: Registry[RouteGroup], host: Any) -> None:
        @post("/v1/notes/{note_id:int}")
        async def add_note(note_id: FromPath[int]) -> dict[str, int]:
            await host.state[STORAGE_STATE_KEY].execute("INSERT INTO notes VALUES ($1)", note_id)
            return {"id": note_id}

        routes.add("notes", RouteGroup(handlers=(add_note,)))

    module.noa_register_routes = noa_register_routes  # type: ignore[attr-defined]
    url = f"postgresql://127.0.0.1:{closed_port()}/test"
    config = {
        "drivers": {"storage": "postgres"},
        "storage": {"postgres_url": url, "acquire_timeout_s": 1},
    }
    async with noa_boot(["http", "storage"], config=config, extra_plugins={"notes": module}) as noa:
        response = await noa.client.post("/v1/notes/1")
        assert response.status_code == 503
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("service_unavailable", "database_unavailable")
        ready = await noa.client.get("/ready")
        assert ready.status_code == 503
        (component,) = ready.json()["components"]
        assert (component["name"], component["detail"]) == (
            "storage",
            "storage driver 'postgres' unreachable",
        )
