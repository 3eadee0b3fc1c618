"""Workflows through the REST API on a real server: references between steps, checks at
submit, failure policies, the parallelism bound, cancellation, a restart mid-workflow,
and concurrent advancements."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from noa.plugin_sdk.ports.storage import STORAGE_STATE_KEY
from noa.plugin_sdk.tasks import TaskContext, TaskFailed, TaskType


class Numbers(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    values: list[int]


async def total(ctx: TaskContext, job: Numbers) -> dict[str, Any]:
    return {"sum": sum(job.values), "values": job.values}


async def echo(ctx: TaskContext, job: dict[str, Any]) -> dict[str, Any]:
    return job


async def fail(ctx: TaskContext, job: dict[str, Any]) -> None:
    raise TaskFailed("refused", code="nope", retry=False)


KINDS = {
    "total": TaskType(total, input_type=Numbers),
    "echo": TaskType(echo),
    "fail": TaskType(fail),
}


def step(id: str, type: str = "echo", depends_on: tuple[str, ...] = (), **input: Any) -> Any:
    return {"id": id, "type": type, "input": input, "depends_on": list(depends_on)}


async def wait_ended(noa: Any, workflow_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        body: dict[str, Any] = (await noa.client.get(f"/v1/workflows/{workflow_id}")).json()
        if body["state"] != "running":
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.02)


def by_id(workflow: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in workflow["steps"]}


async def test_outputs_flow_through_references(serve: Any) -> None:
    async with serve(KINDS) as noa:
        workflow = {
            "steps": [
                {"id": "a", "type": "total", "input": {"values": [1, 2, 3]}},
                {
                    "id": "b",
                    "type": "total",
                    "input": {"values": {"$ref": "a.output.values"}},
                    "depends_on": ["a"],
                },
                step("c", depends_on=("b",), first={"$ref": "a.output.values.0"}),
                step("d", depends_on=("c",), got=[{"$ref": "b.output.sum"}, {"$ref": "c.output"}]),
            ]
        }
        response = await noa.client.post("/v1/workflow", json=workflow)
        assert response.status_code == 200, response.text
        done = response.json()
        assert done["state"] == "succeeded" and done["finished_at"]
        steps = by_id(done)
        assert steps["b"]["output"] == {"sum": 6, "values": [1, 2, 3]}
        assert steps["c"]["output"] == {"first": 1}
        assert steps["d"]["output"] == {"got": [6, {"first": 1}]}
        # Each step ran as a task of its own, visible on /v1/tasks.
        task = (await noa.client.get(f"/v1/tasks/{steps['d']['task_id']}")).json()
        assert (task["state"], task["input"]) == ("succeeded", {"got": [6, {"first": 1}]})


async def test_a_reference_to_a_missing_path_fails_its_step(serve: Any) -> None:
    async with serve(KINDS) as noa:
        workflow = {
            "steps": [step("a", x=1), step("b", depends_on=("a",), y={"$ref": "a.output.z"})]
        }
        done = (await noa.client.post("/v1/workflow", json=workflow)).json()
        assert done["state"] == "failed"
        b = by_id(done)["b"]
        assert (b["state"], b["error"]["code"], b["task_id"]) == (
            "failed",
            "invalid_reference",
            None,
        )
        assert "'z'" in b["error"]["message"]


@pytest.mark.parametrize(
    ("steps", "step_id", "code"),
    [
        ([step("a"), step("a")], "a", "duplicate_step"),
        ([step("a", type="teleport")], "a", "unknown_task_type"),
        ([step("a", depends_on=("ghost",))], "a", "unknown_step"),
        ([step("a", depends_on=("a",))], "a", "cyclic_workflow"),
        (
            [step("a"), step("b", depends_on=("c",)), step("c", depends_on=("b",))],
            "b",
            "cyclic_workflow",
        ),
        ([step("a", v={"$ref": "ghost.output"})], "a", "invalid_reference"),
        ([step("a", v={"$ref": "a.input"})], "a", "invalid_reference"),
        ([step("a"), step("b", v={"$ref": "a.output"})], "b", "invalid_reference"),
        ([{"id": "a", "type": "total", "input": {"values": "many"}}], "a", "invalid_input"),
    ],
)
async def test_bad_workflows_are_refused_naming_the_step(
    serve: Any, steps: list[Any], step_id: str, code: str
) -> None:
    async with serve(KINDS) as noa:
        for path in ("/v1/workflows", "/v1/workflow"):
            response = await noa.client.post(path, json={"steps": steps})
            assert response.status_code == 422, response.text
            error = response.json()["error"]
            assert (error["code"], error["details"]["step"]) == (code, step_id)
            assert f"step {step_id!r}" in error["message"]
        storage = noa.kernel.state[STORAGE_STATE_KEY]
        for table in (
            "noa_orchestration_workflow",
            "noa_orchestration_step",
            "noa_orchestration_task",
        ):
            assert await storage.fetch(f"SELECT id FROM {table}") == []


async def test_a_reference_to_a_transitive_dependency_is_accepted(serve: Any) -> None:
    async with serve(KINDS) as noa:
        steps = [
            step("a", x=1),
            step("b", depends_on=("a",)),
            step("c", depends_on=("b",), v={"$ref": "a.output.x"}),
        ]
        done = (await noa.client.post("/v1/workflow", json={"steps": steps})).json()
        assert by_id(done)["c"]["output"] == {"v": 1}


async def test_fail_fast_cancels_the_rest(serve: Any) -> None:
    gate = asyncio.Event()

    async def slow(ctx: TaskContext, job: dict[str, Any]) -> str:
        await gate.wait()
        return "late"

    async with serve({**KINDS, "slow": TaskType(slow)}) as noa:
        steps = [
            step("bad", type="fail"),
            step("long", type="slow"),
            step("after", depends_on=("bad",)),
        ]
        done = (await noa.client.post("/v1/workflow", json={"steps": steps})).json()
        assert done["state"] == "failed"
        states = {s["id"]: s["state"] for s in done["steps"]}
        assert states == {"bad": "failed", "long": "cancelled", "after": "cancelled"}
        assert by_id(done)["bad"]["error"]["code"] == "nope"
        task = (await noa.client.get(f"/v1/tasks/{by_id(done)['long']['task_id']}")).json()
        assert task["state"] == "cancelled"


async def test_continue_runs_independent_branches_and_skips_dependents(serve: Any) -> None:
    async with serve(KINDS) as noa:
        steps = [
            step("bad", type="fail"),
            step("after_bad", depends_on=("bad",)),
            step("later", depends_on=("after_bad",)),
            step("ok", x=1),
            step("after_ok", depends_on=("ok",), v={"$ref": "ok.output.x"}),
        ]
        body = {"steps": steps, "failure_policy": "continue"}
        done = (await noa.client.post("/v1/workflow", json=body)).json()
        assert done["state"] == "failed"
        states = {s["id"]: s["state"] for s in done["steps"]}
        assert states == {
            "bad": "failed",
            "after_bad": "skipped",
            "later": "skipped",
            "ok": "succeeded",
            "after_ok": "succeeded",
        }
        assert by_id(done)["after_ok"]["output"] == {"v": 1}


async def test_max_parallel_bounds_the_steps_running_together(serve: Any) -> None:
    running = 0
    peak = 0

    async def busy(ctx: TaskContext, job: dict[str, Any]) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        return peak

    async with serve({"busy": TaskType(busy)}, concurrency=8) as noa:
        steps = [step(f"s{n}", type="busy") for n in range(8)]
        body = {"steps": steps, "max_parallel": 2}
        done = (await noa.client.post("/v1/workflow", json=body)).json()
        assert done["state"] == "succeeded"
        assert peak == 2


async def test_cancel_stops_what_has_not_finished(serve: Any) -> None:
    async def slow(ctx: TaskContext, job: dict[str, Any]) -> str:
        await asyncio.sleep(30)
        return "late"

    async with serve({**KINDS, "slow": TaskType(slow)}) as noa:
        steps = [step("quick"), step("long", type="slow"), step("after", depends_on=("long",))]
        submitted = (await noa.client.post("/v1/workflows", json={"steps": steps})).json()
        workflow_id = submitted["id"]
        deadline = time.monotonic() + 5
        while (
            by_id((await noa.client.get(f"/v1/workflows/{workflow_id}")).json())["quick"]["state"]
            != "succeeded"
        ):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        response = await noa.client.post(f"/v1/workflows/{workflow_id}/cancel")
        assert response.status_code == 200, response.text
        cancelled = response.json()
        assert cancelled["state"] == "cancelled"
        states = {s["id"]: s["state"] for s in cancelled["steps"]}
        assert states == {"quick": "succeeded", "long": "cancelled", "after": "cancelled"}
        again = await noa.client.post(f"/v1/workflows/{workflow_id}/cancel")
        assert (again.status_code, again.json()["error"]["code"]) == (409, "workflow_finished")
        missing = await noa.client.get("/v1/workflows/nope")
        assert missing.status_code == 404


async def test_the_waiting_form_answers_202_when_time_runs_out(serve: Any) -> None:
    async def slow(ctx: TaskContext, job: dict[str, Any]) -> str:
        await asyncio.sleep(0.5)
        return "done"

    async with serve({"slow": TaskType(slow)}) as noa:
        body = {"steps": [step("a", type="slow")]}
        response = await noa.client.post("/v1/workflow", json=body, params={"timeout_s": 0.05})
        assert response.status_code == 202
        assert response.json()["state"] == "running"
        done = await wait_ended(noa, response.json()["id"])
        assert done["state"] == "succeeded"


async def test_a_restart_mid_workflow_completes_it_once(serve: Any, tmp_path: Path) -> None:
    effects: list[str] = []
    first_boot = True

    async def effect(ctx: TaskContext, job: dict[str, Any]) -> str:
        effects.append(job["name"])
        if first_boot:
            await asyncio.sleep(float(job.get("pause", 0)))
        return f"{job['name']}{job.get('after', '')}"

    kinds = {"effect": TaskType(effect)}
    steps = [
        {"id": "a", "type": "effect", "input": {"name": "a"}},
        {"id": "b", "type": "effect", "input": {"name": "b", "pause": 5}, "depends_on": ["a"]},
        {
            "id": "c",
            "type": "effect",
            "input": {"name": "c", "after": {"$ref": "b.output"}},
            "depends_on": ["b"],
        },
    ]
    async with serve(kinds) as noa:
        workflow_id = (await noa.client.post("/v1/workflows", json={"steps": steps})).json()["id"]
        deadline = time.monotonic() + 5
        while "b" not in effects:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    # b was interrupted at shutdown and handed back to the queue.
    first_boot = False
    async with serve(kinds) as noa:
        done = await wait_ended(noa, workflow_id, timeout_s=15)
    assert done["state"] == "succeeded"
    assert by_id(done)["c"]["output"] == "cb"
    assert effects.count("a") == 1 and effects.count("c") == 1 and effects.count("b") == 2


async def test_a_workflow_left_behind_is_advanced_at_start(serve: Any) -> None:
    async with serve(KINDS) as noa:
        body = {"steps": [step("a", x=1), step("b", depends_on=("a",), v={"$ref": "a.output.x"})]}
        done = (await noa.client.post("/v1/workflow", json=body)).json()
        storage = noa.kernel.state[STORAGE_STATE_KEY]
        # As if the process died after a's task ended and before the workflow moved on.
        await storage.execute("DELETE FROM noa_orchestration_task WHERE step_id = 'b'")
        await storage.execute(
            "UPDATE noa_orchestration_step SET state = CASE step_id WHEN 'a' THEN 'running' "
            "ELSE 'pending' END WHERE workflow_id = $1",
            done["id"],
        )
        await storage.execute(
            "UPDATE noa_orchestration_workflow SET state = 'running' WHERE id = $1", done["id"]
        )
    async with serve(KINDS) as noa:
        again = await wait_ended(noa, done["id"])
    assert again["state"] == "succeeded"
    assert by_id(again)["b"]["output"] == {"v": 1}


async def test_concurrent_advancements_start_each_step_once(serve: Any) -> None:
    gate = asyncio.Event()

    async def held(ctx: TaskContext, job: dict[str, Any]) -> str:
        await gate.wait()
        return "ok"

    async with serve({"held": TaskType(held)}) as noa:
        steps = [step(f"s{n}", type="held") for n in range(6)]
        body = {"steps": steps, "max_parallel": 3}
        workflow_id = (await noa.client.post("/v1/workflows", json=body)).json()["id"]
        workflows = noa.kernel.state["noa.orchestration.workflows"]
        await asyncio.gather(*(workflows.advance(workflow_id) for _ in range(10)))
        storage = noa.kernel.state[STORAGE_STATE_KEY]
        rows = await storage.fetch(
            "SELECT step_id FROM noa_orchestration_task WHERE workflow_id = $1", workflow_id
        )
        assert len(rows) == 3 and len({r["step_id"] for r in rows}) == 3
        gate.set()
        done = await wait_ended(noa, workflow_id)
        assert done["state"] == "succeeded"
        rows = await storage.fetch(
            "SELECT step_id FROM noa_orchestration_task WHERE workflow_id = $1", workflow_id
        )
        assert sorted(r["step_id"] for r in rows) == [f"s{n}" for n in range(6)]


async def test_retrying_a_dead_step_runs_its_workflow_again(serve: Any) -> None:
    broken = [True]

    async def until_fixed(ctx: TaskContext, job: dict[str, Any]) -> dict[str, Any]:
        if broken[0]:
            raise TaskFailed("the upstream is down", code="down", retry=False)
        return {"fixed": True}

    async with serve({**KINDS, "until_fixed": TaskType(until_fixed)}) as noa:
        steps = [
            {"id": "fetch", "type": "until_fixed", "input": {}},
            step("use", depends_on=("fetch",), got={"$ref": "fetch.output.fixed"}),
        ]
        submitted = (await noa.client.post("/v1/workflows", json={"steps": steps})).json()
        failed = await wait_ended(noa, submitted["id"])
        assert failed["state"] == "failed"
        assert {k: s["state"] for k, s in by_id(failed).items()} == {
            "fetch": "failed",
            "use": "cancelled",
        }
        dead = by_id(failed)["fetch"]["task_id"]
        broken[0] = False  # the operator fixed the upstream, then re-queues the dead letter
        retried = await noa.client.post(f"/v1/tasks/{dead}/retry")
        assert retried.status_code == 200, retried.text
        again = await wait_ended(noa, submitted["id"])
        assert again["state"] == "succeeded"
        assert by_id(again)["use"]["output"] == {"got": True}


async def test_a_dead_step_of_a_cancelled_workflow_is_not_retried(serve: Any) -> None:
    release = asyncio.Event()

    async def held(ctx: TaskContext, job: dict[str, Any]) -> None:
        await release.wait()

    async with serve({**KINDS, "held": TaskType(held)}) as noa:
        steps = [{"id": "slow", "type": "held", "input": {}}, {"id": "bad", "type": "fail"}]
        body = {"steps": steps, "failure_policy": "continue"}
        submitted = (await noa.client.post("/v1/workflows", json=body)).json()
        while True:  # "bad" is dead while "slow" still runs
            view = (await noa.client.get(f"/v1/workflows/{submitted['id']}")).json()
            if by_id(view)["bad"]["state"] == "failed":
                break
            await asyncio.sleep(0.02)
        cancelled = await noa.client.post(f"/v1/workflows/{submitted['id']}/cancel")
        assert cancelled.json()["state"] == "cancelled"
        dead = by_id(view)["bad"]["task_id"]
        refused = await noa.client.post(f"/v1/tasks/{dead}/retry")
        assert refused.status_code == 409
        error = refused.json()["error"]
        assert error["code"] == "workflow_finished"
        assert "is cancelled" in error["message"]
        assert "submit the workflow again" in error["message"]
        assert (await noa.client.get(f"/v1/tasks/{dead}")).json()["state"] == "dead"


async def test_workflows_are_listed_newest_first_and_by_state(serve: Any) -> None:
    async with serve(KINDS) as noa:
        ok = (await noa.client.post("/v1/workflow", json={"steps": [step("a")]})).json()
        bad = (
            await noa.client.post("/v1/workflow", json={"steps": [{"id": "b", "type": "fail"}]})
        ).json()
        listed = (await noa.client.get("/v1/workflows")).json()["workflows"]
        assert [w["id"] for w in listed] == [bad["id"], ok["id"]]
        assert listed[1]["steps"][0]["output"] == {}
        failed = (await noa.client.get("/v1/workflows", params={"state": "failed"})).json()
        assert [w["id"] for w in failed["workflows"]] == [bad["id"]]
        wrong = await noa.client.get("/v1/workflows", params={"state": "done"})
        assert (wrong.status_code, wrong.json()["error"]["code"]) == (400, "invalid_state")
        one = (await noa.client.get("/v1/workflows", params={"limit": 1})).json()["workflows"]
        assert len(one) == 1
