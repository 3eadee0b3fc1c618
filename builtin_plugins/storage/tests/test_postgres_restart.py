"""PostgreSQL stopped and started again while the server runs (the machine's own
service, restarted with its own command before the test ends)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import types
import uuid
from pathlib import Path
from typing import Any

import pytest
from litestar import get
from noa.plugin_sdk import Registry, RouteGroup, hookimpl
from noa.plugin_sdk.ports.storage import STORAGE_STATE_KEY

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def pg_ctl(action: str) -> None:
    versions = sorted(p.name for p in Path("/etc/postgresql").iterdir())
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", action],
        check=True,
        capture_output=True,
        timeout=60,
    )


def counter_plugin(table: str) -> types.ModuleType:
    module = types.ModuleType("counter")

    @hookimpl
    def noa_register_routes(routes: Registry[RouteGroup], host: Any) -> None:
        @get("/v1/count")
        async def count() -> dict[str, int]:
            storage = host.state[STORAGE_STATE_KEY]
            await storage.execute(f"INSERT INTO {table} (id) VALUES ($1)", uuid.uuid4().int >> 65)
            row = await storage.fetch_one(f"SELECT COUNT(*) AS n FROM {table}")
            return {"rows": row["n"]}

        routes.add("count", RouteGroup(handlers=(count,)))

    module.noa_register_routes = noa_register_routes  # type: ignore[attr-defined]
    return module


@pytest.mark.skipif(
    shutil.which("pg_ctlcluster") is None or not Path("/etc/postgresql").is_dir(),
    reason="needs the machine's own PostgreSQL cluster tools (pg_ctlcluster)",
)
async def test_requests_fail_fast_during_a_restart_and_recover_without_a_server_restart(
    noa_boot: Any,
) -> None:
    table = f"restart_{uuid.uuid4().hex[:10]}"
    config = {
        "drivers": {"storage": "postgres"},
        "storage": {"postgres_url": "postgresql://127.0.0.1:5432/test", "acquire_timeout_s": 2},
    }
    async with noa_boot(
        ["http", "storage"], config=config, extra_plugins={"counter": counter_plugin(table)}
    ) as noa:
        storage = noa.kernel.state[STORAGE_STATE_KEY]
        await storage.execute(f"CREATE TABLE {table} (id BIGINT PRIMARY KEY)")
        try:
            assert (await noa.client.get("/v1/count")).json() == {"rows": 1}
            pg_ctl("stop")
            try:
                down = await asyncio.wait_for(noa.client.get("/v1/count"), 15)
                assert down.status_code == 503
                assert down.json()["error"]["code"] == "database_unavailable"
                assert (await noa.client.get("/ready")).status_code == 503
            finally:
                pg_ctl("start")
            for _ in range(100):
                if (await noa.client.get("/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            back = await noa.client.get("/v1/count")
            assert back.status_code == 200, back.text
            assert back.json() == {"rows": 2}
        finally:
            await storage.execute(f"DROP TABLE IF EXISTS {table}")
