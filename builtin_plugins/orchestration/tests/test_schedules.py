"""Cron schedules: validation, firing (once per fire time, however many processes
poll), missed fire times, pause/resume and delete."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from noa.builtin_plugins.orchestration.schedules import TABLE, next_fire
from noa.builtin_plugins.storage.config import StorageConfig
from noa.builtin_plugins.storage.migrate import Migrator, make_engine
from noa.plugin_sdk.config import Secret
from noa.plugin_sdk.ports.storage import STORAGE_STATE_KEY
from noa.plugin_sdk.tasks import TaskContext, TaskType

SCHEDULES_KEY = "noa.orchestration.schedules"
APP = "noa.builtin_plugins.orchestration.piccolo_app"
POSTGRES_URL = os.environ.get("NOA_TEST_POSTGRES_URL", "postgresql://127.0.0.1:5432/test")


def echo_type(seen: list[dict[str, Any]]) -> dict[str, TaskType]:
    async def echo(ctx: TaskContext, job: dict[str, Any]) -> dict[str, Any]:
        seen.append(job)
        return job

    return {"echo": TaskType(echo)}


async def make_due(noa: Any, schedule_id: str, seconds_ago: float) -> None:
    """What the passing of time does to a schedule: its fire time is now in the past."""
    storage = noa.kernel.state[STORAGE_STATE_KEY]
    await storage.execute(
        f"UPDATE {TABLE} SET next_run_at = $2 WHERE id = $1", schedule_id, time.time() - seconds_ago
    )


async def wait_for_run(noa: Any, schedule_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        view: dict[str, Any] = (await noa.client.get(f"/v1/schedules/{schedule_id}")).json()
        if view["last_task_id"]:
            return view
        assert time.monotonic() < deadline, f"schedule never fired: {view}"
        await asyncio.sleep(0.02)


def test_next_fire_follows_the_zone_across_daylight_saving() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # The night clocks went back (2026-10-25): 03:00 local is 02:00 UTC after it.
    before = dt.datetime(2026, 10, 23, 12, 0, tzinfo=berlin).timestamp()
    first = next_fire("0 3 * * *", "Europe/Berlin", before)
    second = next_fire("0 3 * * *", "Europe/Berlin", first)
    assert dt.datetime.fromtimestamp(first, dt.UTC).hour == 1  # 03:00 CEST
    assert dt.datetime.fromtimestamp(second, dt.UTC).hour == 2  # 03:00 CET
    assert second - first == 25 * 3600


async def test_bad_schedules_are_422_naming_the_field_and_store_nothing(serve: Any) -> None:
    async with serve(echo_type([])) as noa:
        cases = [
            ({"cron": "61 * * * *", "type": "echo"}, "cron", "invalid_cron"),
            ({"cron": "every day", "type": "echo"}, "cron", "invalid_cron"),
            ({"cron": "* * * * * *", "type": "echo"}, "cron", "invalid_cron"),
            ({"cron": "0 3 * * *", "timezone": "Mars/Olympus", "type": "echo"}, "timezone",
             "invalid_timezone"),
            ({"cron": "0 3 * * *", "type": "nope"}, "type", "unknown_task_type"),
        ]  # fmt: skip
        for body, param, code in cases:
            response = await noa.client.post("/v1/schedules", json=body)
            assert response.status_code == 422, (body, response.text)
            error = response.json()["error"]
            assert (error["param"], error["code"]) == (param, code), body
        assert (await noa.client.get("/v1/schedules")).json() == {"schedules": []}
        missing = await noa.client.get("/v1/schedules/nope")
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "schedule_not_found")


async def test_a_due_schedule_fires_one_task_and_moves_to_its_next_time(serve: Any) -> None:
    seen: list[dict[str, Any]] = []
    async with serve(echo_type(seen)) as noa:
        created = await noa.client.post(
            "/v1/schedules", json={"cron": "*/5 * * * *", "type": "echo", "input": {"n": 1}}
        )
        assert created.status_code == 201, created.text
        schedule = created.json()
        assert schedule["next_run_at"] > time.time()
        assert schedule["last_task_id"] is None
        # Twelve fire times went by while no server ran: one task, not twelve.
        await make_due(noa, schedule["id"], seconds_ago=3600)
        fired = await wait_for_run(noa, schedule["id"])
        task = (await noa.client.get(f"/v1/tasks/{fired['last_task_id']}")).json()
        while task["state"] != "succeeded":
            await asyncio.sleep(0.02)
            task = (await noa.client.get(f"/v1/tasks/{fired['last_task_id']}")).json()
        assert task["idempotency_key"] == f"schedule:{schedule['id']}:{fired['last_run_at']:.0f}"
        assert task["output"] == {"n": 1}
        assert fired["next_run_at"] > time.time()
        assert dt.datetime.fromtimestamp(fired["next_run_at"], dt.UTC).minute % 5 == 0
        await asyncio.sleep(0.3)  # several polls: nothing more fires
        assert seen == [{"n": 1}]
        listed = (await noa.client.get("/v1/tasks", params={"type": "echo"})).json()["tasks"]
        assert len(listed) == 1


async def test_processes_polling_together_fire_each_time_once(serve: Any) -> None:
    async with serve(echo_type([])) as noa:
        body = {"cron": "0 * * * *", "type": "echo", "input": {}}
        schedule = (await noa.client.post("/v1/schedules", json=body)).json()
        await make_due(noa, schedule["id"], seconds_ago=1)
        schedules = noa.kernel.state[SCHEDULES_KEY]
        await asyncio.gather(*(schedules.fire() for _ in range(4)))
        listed = (await noa.client.get("/v1/tasks", params={"type": "echo"})).json()["tasks"]
        assert len(listed) == 1


async def test_pause_resume_and_delete(serve: Any) -> None:
    async with serve(echo_type([])) as noa:
        body = {"cron": "30 2 * * 1", "timezone": "America/New_York", "type": "echo"}
        schedule = (await noa.client.post("/v1/schedules", json=body)).json()
        paused = (await noa.client.post(f"/v1/schedules/{schedule['id']}/pause")).json()
        assert paused["paused"] is True
        await make_due(noa, schedule["id"], seconds_ago=60)
        await asyncio.sleep(0.3)  # several polls
        assert (await noa.client.get(f"/v1/schedules/{schedule['id']}")).json()[
            "last_task_id"
        ] is None
        resumed = (await noa.client.post(f"/v1/schedules/{schedule['id']}/resume")).json()
        assert resumed["paused"] is False
        assert resumed["next_run_at"] > time.time()  # the missed time is not caught up
        local = dt.datetime.fromtimestamp(resumed["next_run_at"], ZoneInfo("America/New_York"))
        assert (local.weekday(), local.hour, local.minute) == (0, 2, 30)
        deleted = await noa.client.delete(f"/v1/schedules/{schedule['id']}")
        assert deleted.status_code == 200
        assert (await noa.client.get(f"/v1/schedules/{schedule['id']}")).status_code == 404
        assert (await noa.client.get("/v1/tasks")).json()["tasks"] == []


@pytest.fixture
async def pg_database(tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database, dropped afterwards."""
    name = f"noatest_schedules_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(POSTGRES_URL)
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        url = POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
        engine = make_engine("postgres", StorageConfig(postgres_url=Secret(url)), str(tmp_path))
        await Migrator(engine, {"orchestration": APP}).apply()
        yield url
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


@pytest.mark.postgres
async def test_schedules_fire_once_on_postgresql(serve: Any, pg_database: str) -> None:
    storage = {"postgres_url": pg_database}
    config = {"drivers": {"storage": "postgres"}, "storage": storage}
    async with serve(echo_type([]), config=config) as noa:
        body = {"cron": "15 4 * * *", "timezone": "Asia/Tokyo", "type": "echo", "input": {"x": 1}}
        schedule = (await noa.client.post("/v1/schedules", json=body)).json()
        await make_due(noa, schedule["id"], seconds_ago=5)
        schedules = noa.kernel.state[SCHEDULES_KEY]
        await asyncio.gather(*(schedules.fire() for _ in range(4)))
        fired = await wait_for_run(noa, schedule["id"])
        listed = (await noa.client.get("/v1/tasks", params={"type": "echo"})).json()["tasks"]
        assert [t["id"] for t in listed] == [fired["last_task_id"]]
        local = dt.datetime.fromtimestamp(fired["next_run_at"], ZoneInfo("Asia/Tokyo"))
        assert (local.hour, local.minute) == (4, 15)
