"""Faults through real ``noa serve`` processes on PostgreSQL and NATS JetStream: a server
SIGKILLed mid-run loses no task and applies no effect twice after a restart; a task
whose server dies mid-run finishes on another server sharing the queue; malformed
submissions are refused with a 4xx and store nothing.

Each test gets a database of its own on the PostgreSQL server (created and dropped
here), so no other server sharing the ``test`` database can claim its tasks, and a NATS
stream, subject prefix and queue of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.nats]

POSTGRES_URL = os.environ.get("NOA_TEST_POSTGRES_URL", "postgresql://127.0.0.1:5432/test")
NATS_URL = "nats://127.0.0.1:4222"
FLOWS = ("/v1/workflows", "/v1/workflow")
TASK_TABLES = ("noa_orchestration_task", "noa_orchestration_workflow", "noa_orchestration_step")

# A third-party plugin's task type: records every run, applies its effect once per task
# id (the insert keyed by it), then works a while so a kill lands mid-run.
EFFECT_PLUGIN = """
import asyncio
import os

from noa.plugin_sdk import hookimpl
from noa.plugin_sdk.ports.storage import STORAGE_STATE_KEY
from noa.plugin_sdk.tasks import TaskType


@hookimpl
def noa_register_task_types(task_types, host):
    storage = host.state[STORAGE_STATE_KEY]
    pause_s = float(os.environ["FAULT_PAUSE_S"])

    async def effect(ctx, job):
        await storage.execute(
            "INSERT INTO fault_run (task_id, attempt, pid) VALUES ($1, $2, $3)",
            ctx.task_id, ctx.attempt, os.getpid(),
        )
        await storage.execute(
            "INSERT INTO fault_effect (task_id, n) VALUES ($1, $2) "
            "ON CONFLICT (task_id) DO NOTHING",
            ctx.task_id, job["n"],
        )
        await asyncio.sleep(job.get("pause_s", pause_s) if ctx.attempt == 1 else pause_s)
        return job["n"]

    task_types.add("fault_effect", TaskType(effect, timeout_s=60, max_retries=5))
"""


@pytest.fixture
def noa_serve(tmp_path: Path) -> Iterator[Any]:
    """The root conftest's ``serve`` (real ``noa serve`` processes, killed at the end):
    this folder's conftest gives that name to an in-process server."""
    root = Path(__file__).resolve().parents[3] / "conftest.py"
    spec = importlib.util.spec_from_file_location("noa_root_conftest", root)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    processes = module.serve.__wrapped__(tmp_path)
    yield next(processes)
    with contextlib.suppress(StopIteration):
        next(processes)


def _with_database(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """The URL of a fresh database holding the effect tables; dropped afterwards."""
    name = f"noatest_faults_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    except asyncpg.InsufficientPrivilegeError:
        await admin.close()
        pytest.fail(f"the role of {POSTGRES_URL} needs CREATEDB for the fault tests")
    url = _with_database(POSTGRES_URL, name)
    conn = await asyncpg.connect(url)
    await conn.execute(
        "CREATE TABLE fault_effect (task_id TEXT PRIMARY KEY, n INTEGER NOT NULL);"
        "CREATE TABLE fault_run (task_id TEXT NOT NULL, attempt INTEGER NOT NULL, "
        "pid INTEGER NOT NULL)"
    )
    await conn.close()
    try:
        yield url
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


@pytest.fixture
def effect_site(dist_factory: Any) -> Path:
    site: Path = dist_factory(
        "noa-plugin-fault-effect",
        {"noa.plugins": {"fault_effect": "fault_effect_plugin"}},
        {"fault_effect_plugin": EFFECT_PLUGIN},
    )
    return site


@pytest.fixture
async def nats_env() -> AsyncIterator[dict[str, str]]:
    """Broker settings of a stream, subject prefix and work queue of this test's own."""
    tag = uuid.uuid4().hex[:12]
    try:
        yield {
            "NOA_DRIVERS__BROKER": "nats",
            "NOA_BROKER__NATS_STREAM": f"NOATEST_{tag}",
            "NOA_BROKER__SUBJECT_PREFIX": f"noatest{tag}",
            "NOA_ORCHESTRATION__QUEUE": f"faults.{tag}",
        }
    finally:
        nc = await nats.connect(NATS_URL)
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(f"NOATEST_{tag}")
        await nc.close()


def _env(database: str, nats_env: dict[str, str], **extra: str) -> dict[str, str]:
    return {
        "NOA_DRIVERS__STORAGE": "postgres",
        "NOA_STORAGE__POSTGRES_URL": database,
        "NOA_STORAGE__MIGRATE_ON_START": "true",
        "NOA_PLUGINS__DISABLE": '["inference"]',
        # Fast clocks: a dead worker's lease runs out in 2 s.
        "NOA_ORCHESTRATION__LEASE_S": "2",
        "NOA_ORCHESTRATION__POLL_INTERVAL_S": "0.2",
        "NOA_ORCHESTRATION__REDISPATCH_AFTER_S": "3",
        "NOA_ORCHESTRATION__BACKOFF_BASE_S": "0.05",
        "NOA_ORCHESTRATION__BACKOFF_MAX_S": "0.2",
        "NOA_ORCHESTRATION__SHUTDOWN_GRACE_S": "0",
        "FAULT_PAUSE_S": "0.2",
        **nats_env,
        **extra,
    }


async def _scalar(url: str, sql: str, *params: Any) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql, *params)
    finally:
        await conn.close()


async def _rows(url: str, sql: str, *params: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql, *params))
    finally:
        await conn.close()


async def _wait_for(url: str, sql: str, check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await _scalar(url, sql)
        if check(value):
            return value
        assert time.monotonic() < deadline, f"{what}: still {value!r} after {timeout_s} s"
        await asyncio.sleep(0.05)


async def _submit_all(base: str, bodies: list[dict[str, Any]], in_flight: int = 32) -> list[str]:
    gate = asyncio.Semaphore(in_flight)
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:

        async def one(body: dict[str, Any]) -> str:
            async with gate:
                response = await client.post("/v1/tasks", json=body)
            assert response.status_code == 201, response.text
            return str(response.json()["id"])

        return list(await asyncio.gather(*(one(body) for body in bodies)))


async def test_a_server_killed_mid_run_finishes_1000_tasks_once_after_a_restart(
    noa_serve: Any, effect_site: Path, database: str, nats_env: dict[str, str]
) -> None:
    env = _env(database, nats_env, NOA_ORCHESTRATION__CONCURRENCY="16")
    first = noa_serve(env=env, pythonpath=[effect_site])
    first.wait_ready(timeout=60)
    bodies = [{"type": "fault_effect", "input": {"n": n}} for n in range(1000)]
    ids = await _submit_all(first.url, bodies)
    assert len(set(ids)) == 1000  # every one acknowledged (201: stored)
    await _wait_for(
        database,
        "SELECT COUNT(*) FROM noa_orchestration_task WHERE state = 'succeeded'",
        lambda n: n >= 100,
        timeout_s=60,
        what="tasks succeeded before the kill",
    )
    first.kill()
    states = dict(
        await _rows(database, "SELECT state, COUNT(*) FROM noa_orchestration_task GROUP BY 1")
    )
    assert 0 < states.get("succeeded", 0) < 1000, states
    assert states.get("running", 0) > 0, states  # killed mid-run, not between tasks

    second = noa_serve(env={**env, "FAULT_PAUSE_S": "0.01"}, pythonpath=[effect_site])
    second.wait_ready(timeout=60)
    await _wait_for(
        database,
        "SELECT COUNT(*) FROM noa_orchestration_task WHERE state <> 'succeeded'",
        lambda n: n == 0,
        timeout_s=90,
        what=f"tasks not succeeded (server log:\n{second.output()[-3000:]})",
    )
    tasks = await _rows(database, "SELECT id, output, attempts FROM noa_orchestration_task")
    assert sorted(str(t["id"]) for t in tasks) == sorted(ids)  # none lost, none added
    outputs = {str(t["id"]): t["output"] for t in tasks}
    assert [outputs[i] for i in ids] == [str(n) for n in range(1000)]
    # Effects: exactly one per task id, with the task's own input.
    effects = dict(await _rows(database, "SELECT task_id, n FROM fault_effect"))
    assert effects == {task_id: n for n, task_id in enumerate(ids)}
    # Executions: at least one per task; the runs the kill interrupted ran again.
    runs = dict(await _rows(database, "SELECT task_id, COUNT(*) FROM fault_run GROUP BY 1"))
    assert set(runs) == set(ids)
    assert any(count > 1 for count in runs.values())
    second.terminate()


async def test_a_task_whose_server_dies_mid_run_finishes_on_the_other_server(
    noa_serve: Any, effect_site: Path, database: str, nats_env: dict[str, str]
) -> None:
    env = _env(database, nats_env)
    servers = []
    for _ in range(2):
        # One after the other: migrate_on_start on a fresh database is not serialised
        # between processes (two at once race on the first migration).
        servers.append(noa_serve(env=env, pythonpath=[effect_site]))
        servers[-1].wait_ready(timeout=60)
    # A long first run (10 s), so it is surely still running when its server dies.
    [task_id] = await _submit_all(
        servers[0].url, [{"type": "fault_effect", "input": {"n": 7, "pause_s": 10}}]
    )
    pid = await _wait_for(
        database,
        f"SELECT pid FROM fault_run WHERE task_id = '{task_id}'",
        lambda pid: pid is not None,
        timeout_s=30,
        what="the task's first run",
    )
    # Which server runs it: its process group is that server's (start_new_session).
    [victim] = [s for s in servers if os.getpgid(pid) == s.proc.pid]
    [survivor] = [s for s in servers if s is not victim]
    victim.kill()
    killed_at = time.monotonic()

    async with httpx.AsyncClient(base_url=survivor.url, timeout=10) as client:
        deadline = killed_at + 30
        while True:
            task = (await client.get(f"/v1/tasks/{task_id}")).json()
            if task["state"] != "running" and task["state"] != "queued":
                break
            assert time.monotonic() < deadline, task
            await asyncio.sleep(0.1)
    assert (task["state"], task["output"], task["attempts"]) == ("succeeded", 7, 2)
    # Taken back once its lease (2 s) ran out, well before the first run would have ended.
    assert time.monotonic() - killed_at < 8
    runs = await _rows(database, "SELECT attempt, pid FROM fault_run ORDER BY attempt")
    assert [r["attempt"] for r in runs] == [1, 2]
    assert os.getpgid(runs[1]["pid"]) == survivor.proc.pid
    assert await _scalar(database, "SELECT COUNT(*) FROM fault_effect") == 1
    survivor.terminate()


def _malformed(limit: int) -> list[tuple[str, Any, int]]:
    """(path, JSON body or raw bytes, expected status)."""
    step = {"id": "a", "type": "fault_effect", "input": {"n": 1}}
    big = {"n": 1, "padding": "x" * limit}
    workflows = [
        # Checked by the workflow's rules: 422 naming the step.
        ({"steps": [{**step, "depends_on": ["b"]}, {**step, "id": "b", "depends_on": ["a"]}]}, 422),
        ({"steps": [step, {**step, "id": "b", "depends_on": ["nowhere"]}]}, 422),
        ({"steps": [step, {**step, "id": "b", "type": "no_such_type"}]}, 422),
        ({"steps": [step, {**step, "input": {"n": 2}}]}, 422),  # duplicate id
        ({"steps": [step, {**step, "id": "b", "input": {"n": {"$ref": "a.output"}}}]}, 422),
        # Not the request's shape: 400.
        ({"steps": []}, 400),
        ({"steps": [{**step, "id": "not an id!"}]}, 400),
        ({"steps": [step], "failure_policy": "sometimes"}, 400),
        ({"steps": [step], "surprise": True}, 400),
        (b'{"steps": [', 400),
        # Inputs past orchestration.max_input_bytes.
        ({"steps": [step, {**step, "id": "b", "input": big}]}, 413),
    ]
    cases = [(path, body, status) for path in FLOWS for body, status in workflows]
    cases += [
        ("/v1/tasks", {"type": "no_such_type", "input": {}}, 422),
        ("/v1/tasks", {"type": "fault_effect", "input": big}, 413),
        ("/v1/tasks", {"type": "fault_effect", "input": {"n": 1}, "surprise": 1}, 400),
        ("/v1/tasks", {"type": "fault_effect", "input": [1, 2]}, 400),
        ("/v1/tasks", {"type": "fault_effect", "priority": 10**6}, 400),
        ("/v1/tasks", b"not json", 400),
        # Past the request body limit (input limit + its envelope): refused unread.
        ("/v1/tasks", {"type": "fault_effect", "input": {"pad": "x" * (limit + 20_000)}}, 413),
        ("/v1/workflows", {"steps": [{**step, "input": {"pad": "x" * (limit + 20_000)}}]}, 413),
    ]
    return cases


async def test_malformed_submissions_get_a_4xx_and_store_nothing(
    noa_serve: Any, effect_site: Path, database: str, nats_env: dict[str, str]
) -> None:
    limit = 4000
    env = _env(database, nats_env, NOA_ORCHESTRATION__MAX_INPUT_BYTES=str(limit))
    server = noa_serve(env=env, pythonpath=[effect_site])
    server.wait_ready(timeout=60)
    counts = "SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {t})" for t in TASK_TABLES)
    conn = await asyncpg.connect(database)
    try:
        before = tuple(await conn.fetchrow(counts))
        refused = []
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            for path, body, status in _malformed(limit):
                if isinstance(body, bytes):
                    headers = {"Content-Type": "application/json"}
                    response = await client.post(path, content=body, headers=headers)
                else:
                    response = await client.post(path, json=body)
                refused.append((path, str(body)[:80], response.status_code))
                assert response.status_code == status, (path, body, response.text[:500])
                if status == 422:
                    assert response.json()["error"]["code"], response.text
        assert tuple(await conn.fetchrow(counts)) == before, refused
        # The same server still takes a good submission.
        [task_id] = await _submit_all(server.url, [{"type": "fault_effect", "input": {"n": 3}}])
        assert await conn.fetchval("SELECT COUNT(*) FROM noa_orchestration_task") == before[0] + 1
        assert task_id
    finally:
        await conn.close()
    server.terminate()
