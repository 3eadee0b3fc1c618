"""Tasks through the REST API on a real server (SQLite storage, in-process broker):
results, retries with backoff, dead letters, idempotency, cancellation, timeouts,
backpressure and input validation."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import msgspec
from noa.plugin_sdk.tasks import TaskContext, TaskFailed, TaskType


class Add(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    a: int
    b: int


async def add(ctx: TaskContext, job: Add) -> dict[str, Any]:
    await ctx.progress(0.5, "adding")
    return {"sum": job.a + job.b, "task": ctx.task_id, "attempt": ctx.attempt}


async def test_a_task_runs_to_its_output(serve: Any, submit: Any, finished: Any) -> None:
    async with serve({"add": TaskType(add, input_type=Add)}) as noa:
        task = await submit(noa, type="add", input={"a": 2, "b": 3}, priority=5)
        assert (task["state"], task["attempts"], task["priority"]) == ("queued", 0, 5)
        done = await finished(noa, task["id"])
        assert done["state"] == "succeeded"
        assert done["output"] == {"sum": 5, "task": task["id"], "attempt": 1}
        assert (done["attempts"], done["error"], done["progress"]) == (1, None, 1.0)
        assert done["input"] == {"a": 2, "b": 3}
        assert done["finished_at"] >= done["started_at"] >= done["created_at"]
        listed = (await noa.client.get("/v1/tasks", params={"type": "add"})).json()["tasks"]
        assert [t["id"] for t in listed] == [task["id"]]
        none = await noa.client.get("/v1/tasks", params={"state": "dead"})
        assert none.json()["tasks"] == []
        bad = await noa.client.get("/v1/tasks", params={"state": "sleeping"})
        assert (bad.status_code, bad.json()["error"]["param"]) == (400, "state")
        missing = await noa.client.get("/v1/tasks/nope")
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "task_not_found")


async def test_failed_runs_are_retried_until_one_succeeds(
    serve: Any, submit: Any, finished: Any
) -> None:
    runs: list[int] = []

    async def flaky(ctx: TaskContext, job: dict[str, Any]) -> str:
        runs.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError(f"flaked on attempt {ctx.attempt}")
        return "ok"

    async with serve({"flaky": TaskType(flaky, max_retries=3)}) as noa:
        task = await submit(noa, type="flaky")
        done = await finished(noa, task["id"])
        assert (done["state"], done["output"], done["attempts"]) == ("succeeded", "ok", 3)
        # The last failure stays visible after the success.
        assert done["error"] == {
            "code": "handler_error",
            "message": "RuntimeError: flaked on attempt 2",
            "attempt": 2,
        }
        assert runs == [1, 2, 3]


async def test_exhausted_retries_go_dead_and_can_be_queued_again(
    serve: Any, submit: Any, finished: Any
) -> None:
    healed = False
    runs = Counter[str]()

    async def broken(ctx: TaskContext, job: dict[str, Any]) -> str:
        runs[ctx.task_id] += 1
        if not healed:
            raise ValueError("upstream down")
        return "healed"

    async with serve({"broken": TaskType(broken, max_retries=1)}) as noa:
        task = await submit(noa, type="broken", max_retries=2)
        dead = await finished(noa, task["id"])
        assert (dead["state"], dead["attempts"], dead["max_retries"]) == ("dead", 3, 2)
        assert dead["error"]["message"] == "ValueError: upstream down"
        listed = (await noa.client.get("/v1/tasks/dead")).json()["tasks"]
        assert [t["id"] for t in listed] == [task["id"]]
        assert runs[task["id"]] == 3

        not_dead = await noa.client.post(f"/v1/tasks/{task['id']}x/retry")
        assert not_dead.status_code == 404
        healed = True
        again = await noa.client.post(f"/v1/tasks/{task['id']}/retry")
        assert again.status_code == 200, again.text
        assert (again.json()["state"], again.json()["attempts"]) == ("queued", 0)
        done = await finished(noa, task["id"])
        assert (done["state"], done["output"], done["attempts"]) == ("succeeded", "healed", 1)
        twice = await noa.client.post(f"/v1/tasks/{task['id']}/retry")
        assert (twice.status_code, twice.json()["error"]["code"]) == (409, "task_not_dead")


async def test_a_permanent_failure_skips_the_retries(
    serve: Any, submit: Any, finished: Any
) -> None:
    async def refuse(ctx: TaskContext, job: dict[str, Any]) -> None:
        raise TaskFailed("no such account", code="no_account", retry=False)

    async with serve({"refuse": TaskType(refuse, max_retries=5)}) as noa:
        done = await finished(noa, (await submit(noa, type="refuse"))["id"])
        assert (done["state"], done["attempts"]) == ("dead", 1)
        assert done["error"] == {"code": "no_account", "message": "no such account", "attempt": 1}


async def test_an_idempotency_key_returns_the_first_task_and_runs_it_once(
    serve: Any, submit: Any, finished: Any
) -> None:
    runs = Counter[str]()

    async def count(ctx: TaskContext, job: dict[str, Any]) -> int:
        runs[ctx.task_id] += 1
        return int(job["n"])

    async with serve({"count": TaskType(count)}) as noa:
        body = {"type": "count", "input": {"n": 1}, "idempotency_key": "order-17"}
        first = await noa.client.post("/v1/tasks", json=body)
        assert first.status_code == 201
        await finished(noa, first.json()["id"])
        second = await noa.client.post("/v1/tasks", json=body)
        assert second.status_code == 200
        assert second.json()["id"] == first.json()["id"]
        assert second.json()["output"] == 1
        # The key reused for other work is a mistake, not a resubmission.
        reused = await noa.client.post("/v1/tasks", json={**body, "input": {"n": 2}})
        assert reused.status_code == 409
        error = reused.json()["error"]
        assert (error["code"], error["param"]) == ("idempotency_key_reused", "idempotency_key")
        assert first.json()["id"] in error["message"]
        # Concurrent submissions with a fresh key make one task too.
        answers = await asyncio.gather(
            *(
                noa.client.post("/v1/tasks", json={**body, "idempotency_key": "order-18"})
                for _ in range(5)
            )
        )
        assert len({a.json()["id"] for a in answers}) == 1
        assert sorted(a.status_code for a in answers) == [200, 200, 200, 200, 201]
        await finished(noa, answers[0].json()["id"])
        await asyncio.sleep(0.2)
        assert sorted(runs.values()) == [1, 1]


async def test_cancel_a_scheduled_task_and_a_running_one(
    serve: Any, submit: Any, finished: Any
) -> None:
    started = asyncio.Event()
    stopped: list[str] = []

    async def hang(ctx: TaskContext, job: dict[str, Any]) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            stopped.append(ctx.task_id)
            raise

    async with serve({"hang": TaskType(hang, timeout_s=120)}) as noa:
        later = await submit(noa, type="hang", run_at="2999-01-01T00:00:00Z")
        cancelled = await noa.client.post(f"/v1/tasks/{later['id']}/cancel")
        assert cancelled.status_code == 200
        assert cancelled.json()["state"] == "cancelled"
        again = await noa.client.post(f"/v1/tasks/{later['id']}/cancel")
        assert (again.status_code, again.json()["error"]["code"]) == (409, "task_finished")

        running = await submit(noa, type="hang")
        await asyncio.wait_for(started.wait(), 5)
        await finished(noa, running["id"], states=("running",))
        assert (await noa.client.post(f"/v1/tasks/{running['id']}/cancel")).status_code == 200
        done = await finished(noa, running["id"])
        assert done["state"] == "cancelled"
        for _ in range(100):
            if stopped:
                break
            await asyncio.sleep(0.02)
        assert stopped == [running["id"]]
        assert not started.is_set() or later["id"] not in stopped


async def test_a_run_past_its_timeout_fails(serve: Any, submit: Any, finished: Any) -> None:
    async def slow(ctx: TaskContext, job: dict[str, Any]) -> None:
        await asyncio.sleep(10)

    async with serve({"slow": TaskType(slow, timeout_s=30)}) as noa:
        task = await submit(noa, type="slow", timeout_s=0.1, max_retries=1)
        done = await finished(noa, task["id"])
        assert (done["state"], done["attempts"], done["error"]["code"]) == ("dead", 2, "timeout")
        assert "timeout of 0.1 s" in done["error"]["message"]


async def test_a_full_queue_answers_429_with_retry_after(serve: Any, submit: Any) -> None:
    async def noop(ctx: TaskContext, job: dict[str, Any]) -> None:
        return None

    async with serve({"noop": TaskType(noop)}, max_queued=2, retry_after_s=7) as noa:
        for _ in range(2):
            await submit(noa, type="noop", run_at=4102444800.0)
        full = await noa.client.post("/v1/tasks", json={"type": "noop"})
        assert full.status_code == 429
        assert full.headers["retry-after"] == "7"
        assert full.json()["error"]["code"] == "queue_full"
        listed = (await noa.client.get("/v1/tasks")).json()["tasks"]
        assert len(listed) == 2


async def test_client_mistakes_are_4xx_and_store_nothing(serve: Any) -> None:
    async with serve({"add": TaskType(add, input_type=Add)}, max_input_bytes=1000) as noa:
        cases: list[tuple[Any, int, str | None]] = [
            ({"type": "nope"}, 422, "type"),
            ({"type": "add", "input": {"a": 1}}, 422, "input"),
            ({"type": "add", "input": {"a": 1, "b": "x"}}, 422, "input"),
            ({"type": "add", "input": {"a": 1, "b": 2, "pad": "x" * 2000}}, 413, "input"),
            ({"type": "add", "input": [1, 2]}, 400, None),
            ({"type": "add", "priority": 5000}, 400, None),
            ({"type": "add", "timeout_s": -1}, 400, None),
            (
                {"type": "add", "input": {"a": 1, "b": 2}, "run_at": "2030-01-01T00:00:00"},
                400,
                "run_at",
            ),
            ({"type": "add", "surprise": True}, 400, None),
        ]
        for body, status, param in cases:
            response = await noa.client.post("/v1/tasks", json=body)
            assert response.status_code == status, (body, response.text)
            if param is not None:
                assert response.json()["error"]["param"] == param, response.text
        unknown = await noa.client.post("/v1/tasks", json={"type": "nope"})
        assert (
            "unknown task type 'nope' (registered: add, http_request)"
            in unknown.json()["error"]["message"]
        )
        garbage = await noa.client.post(
            "/v1/tasks", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert garbage.status_code == 400
        huge = await noa.client.post("/v1/tasks", content=b"x" * 2_000_000)
        assert huge.status_code == 413
        assert (await noa.client.get("/v1/tasks")).json()["tasks"] == []
