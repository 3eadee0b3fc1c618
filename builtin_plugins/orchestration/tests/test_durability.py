"""Durability: the database is the truth. A server stopped mid-run and booted again on
the same data completes every task, an idempotent handler's effect landing once per
task; a task whose worker died (its lease ran out) is taken back."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import msgspec
from noa.plugin_sdk.ports.broker import BROKER_STATE_KEY, Message
from noa.plugin_sdk.ports.storage import STORAGE_STATE_KEY
from noa.plugin_sdk.tasks import TaskContext, TaskType


def effect_handler(folder: Path, runs: list[str], pause_s: float) -> TaskType:
    """Applies its effect (a file named by the task id) at most once per task id, then
    works a while: a run interrupted after the effect must not apply it again."""

    async def effect(ctx: TaskContext, job: dict[str, Any]) -> int:
        runs.append(ctx.task_id)
        try:
            fd = os.open(folder / ctx.task_id, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass  # applied by an earlier run of this task
        else:
            os.write(fd, b"%d" % job["n"])
            os.close(fd)
        await asyncio.sleep(pause_s)
        return int(job["n"])

    return TaskType(effect)


async def test_a_stopped_server_finishes_every_task_after_a_restart(
    serve: Any, submit: Any, finished: Any, tmp_path: Path
) -> None:
    effects = tmp_path / "effects"
    effects.mkdir()
    runs: list[str] = []
    slow = {"effect": effect_handler(effects, runs, pause_s=0.3)}
    async with serve(slow, concurrency=4) as noa:
        ids = [(await submit(noa, type="effect", input={"n": n}))["id"] for n in range(20)]
        await asyncio.sleep(0.1)  # a first batch is mid-run
    assert 4 <= len(set(runs)) < 20

    fast = {"effect": effect_handler(effects, runs, pause_s=0.0)}
    async with serve(fast, concurrency=4) as noa:
        outputs = [(await finished(noa, task_id))["output"] for task_id in ids]
    assert outputs == list(range(20))
    assert sorted(p.name for p in effects.iterdir()) == sorted(ids)
    assert all((effects / i).read_text() == str(n) for n, i in enumerate(ids))
    # Interrupted runs ran again (at least once), without applying the effect twice.
    assert len(runs) > 20 and set(runs) == set(ids)


async def _fake_dead_worker(noa: Any, task_id: str) -> None:
    """Make the task look claimed by a worker that died: running, its lease run out."""
    storage = noa.kernel.state[STORAGE_STATE_KEY]
    changed = await storage.execute(
        "UPDATE noa_orchestration_task SET state = 'running', attempts = 1, "
        "worker = 'gone-1', lease_until = $2 WHERE id = $1 AND state = 'queued'",
        task_id,
        time.time() - 1,
    )
    assert changed == 1


async def test_a_non_idempotent_task_interrupted_by_shutdown_goes_dead(
    serve: Any, submit: Any, finished: Any
) -> None:
    started = asyncio.Event()
    runs: list[str] = []

    async def charge(ctx: TaskContext, job: dict[str, Any]) -> None:
        runs.append(ctx.task_id)
        started.set()
        await asyncio.sleep(30)

    once = {"charge": TaskType(charge, idempotent=False)}
    async with serve(once) as noa:
        task = await submit(noa, type="charge")
        await started.wait()
    # Shut down mid-run (no grace): not given back to the queue, so never run twice.
    async with serve(once) as noa:
        dead = await finished(noa, task["id"])
    assert (dead["state"], dead["error"]["code"]) == ("dead", "interrupted")
    assert "not idempotent" in dead["error"]["message"]
    assert runs == [task["id"]]


async def test_a_task_of_a_dead_worker_is_taken_back(
    serve: Any, submit: Any, finished: Any
) -> None:
    async def echo(ctx: TaskContext, job: dict[str, Any]) -> int:
        return ctx.attempt

    async def once(ctx: TaskContext, job: dict[str, Any]) -> int:
        return ctx.attempt

    kinds = {"echo": TaskType(echo), "once": TaskType(once, idempotent=False)}
    async with serve(kinds) as noa:
        events: list[tuple[str, str]] = []

        async def collect(message: Message) -> None:
            event = msgspec.json.decode(message.payload)
            events.append((event["id"], event["event"]))

        await noa.kernel.state[BROKER_STATE_KEY].subscribe("orchestration.events.tasks.>", collect)
        future = 4102444800.0  # scheduled far ahead, so no worker claims it first
        echo_task = await submit(noa, type="echo", run_at=future)
        once_task = await submit(noa, type="once", run_at=future)
        await _fake_dead_worker(noa, echo_task["id"])
        await _fake_dead_worker(noa, once_task["id"])
        done = await finished(noa, echo_task["id"])
        assert (done["state"], done["output"], done["attempts"]) == ("succeeded", 2, 2)
        # Not idempotent: running it again might apply its effect twice.
        dead = await finished(noa, once_task["id"])
        assert (dead["state"], dead["error"]["code"]) == ("dead", "interrupted")
        # Followers see the take-back: one given back to the queue, one dead.
        for _ in range(100):
            if (once_task["id"], "dead") in events and (echo_task["id"], "succeeded") in events:
                break
            await asyncio.sleep(0.02)
        assert (echo_task["id"], "released") in events
        assert (once_task["id"], "dead") in events


async def test_scheduled_tasks_wait_for_their_time(serve: Any, submit: Any, finished: Any) -> None:
    async def stamp(ctx: TaskContext, job: dict[str, Any]) -> float:
        return time.time()

    async with serve({"stamp": TaskType(stamp)}) as noa:
        at = time.time() + 0.4
        low = await submit(noa, type="stamp", run_at=at)
        done = await finished(noa, low["id"])
        assert done["output"] >= at
        assert done["run_at"] == at


async def test_a_worker_without_the_task_type_leaves_the_task_for_one_with_it(
    serve: Any, submit: Any, finished: Any
) -> None:
    """Mixed deployments and rolling upgrades: a server lacking a type's plugin neither
    runs nor fails that type's tasks; a server with it runs them."""

    async def ghost(ctx: TaskContext, job: dict[str, Any]) -> str:
        return "boo"

    async def echo(ctx: TaskContext, job: dict[str, Any]) -> int:
        return 1

    async with serve({"ghost": TaskType(ghost), "echo": TaskType(echo)}) as noa:
        task = await submit(noa, type="ghost", run_at=time.time() + 0.3)
    async with serve({"echo": TaskType(echo)}) as noa:
        await asyncio.sleep(1.0)  # due, published and offered to this worker many times
        waiting = (await noa.client.get(f"/v1/tasks/{task['id']}")).json()
        assert (waiting["state"], waiting["attempts"]) == ("queued", 0)
        other = await finished(noa, (await submit(noa, type="echo"))["id"])
        assert other["state"] == "succeeded"
    async with serve({"ghost": TaskType(ghost)}) as noa:
        done = await finished(noa, task["id"])
        assert (done["state"], done["output"], done["attempts"]) == ("succeeded", "boo", 1)
