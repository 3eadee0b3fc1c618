"""Progress events: on the broker (``orchestration.events.*``) and as Server-Sent Events
per task and per workflow, including from a worker in another server (NATS)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any

import msgspec
import nats
import pytest
from noa.builtin_plugins.orchestration.events import TaskEvent, task_subject
from noa.builtin_plugins.orchestration.sse import follow
from noa.plugin_sdk.inprocess_broker import InProcessBroker
from noa.plugin_sdk.ports.broker import BROKER_STATE_KEY, Message
from noa.plugin_sdk.tasks import TaskContext, TaskFailed, TaskType


def parse_sse(text: str) -> list[tuple[str, Any]]:
    """``(event name, decoded data)`` of each event; comment lines as ``(":", text)``."""
    found: list[tuple[str, Any]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in block.splitlines():
            if line.startswith(":"):
                found.append((":", line[1:].strip()))
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            found.append((name, json.loads("\n".join(data))))
    return found


def gated() -> tuple[TaskType, asyncio.Event, asyncio.Event]:
    started, release = asyncio.Event(), asyncio.Event()

    async def wait(ctx: TaskContext, job: dict[str, Any]) -> str:
        started.set()
        await release.wait()
        return "done"

    return TaskType(wait), started, release


async def test_a_task_stream_starts_with_its_state_and_ends_after_the_last(
    serve: Any, submit: Any
) -> None:
    gate, started, release = gated()
    async with serve({"gate": gate}) as noa:
        task = await submit(noa, type="gate")
        await started.wait()
        stream = asyncio.create_task(noa.client.get(f"/v1/tasks/{task['id']}/events"))
        await asyncio.sleep(0.1)  # the stream is open, waiting
        release.set()
        response = await asyncio.wait_for(stream, 5)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [(name, e["event"], e["state"]) for name, e in parse_sse(response.text)]
        assert events == [("task", "current", "running"), ("task", "succeeded", "succeeded")]
        last = parse_sse(response.text)[-1][1]
        assert (last["id"], last["type"], last["attempt"]) == (task["id"], "gate", 1)
        assert last["finished_at"] >= last["started_at"] >= last["created_at"]
        # A finished task's stream is its state alone.
        again = await noa.client.get(f"/v1/tasks/{task['id']}/events")
        assert [e["event"] for _, e in parse_sse(again.text)] == ["current"]
        missing = await noa.client.get("/v1/tasks/nope/events")
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "task_not_found")


async def test_every_state_change_is_published_on_the_bus(serve: Any, submit: Any) -> None:
    async def broken(ctx: TaskContext, job: dict[str, Any]) -> None:
        raise TaskFailed("nope", code="broken") if ctx.attempt > 1 else RuntimeError("flake")

    async with serve({"broken": TaskType(broken, max_retries=1)}) as noa:
        seen: list[TaskEvent] = []
        broker = noa.kernel.state[BROKER_STATE_KEY]

        async def collect(message: Message) -> None:
            seen.append(msgspec.json.decode(message.payload, type=TaskEvent))

        await broker.subscribe("orchestration.events.tasks.>", collect)
        task = await submit(noa, type="broken")
        for _ in range(200):
            if seen and seen[-1].event == "dead":
                break
            await asyncio.sleep(0.02)
        assert [(e.event, e.state, e.attempt) for e in seen] == [
            ("queued", "queued", 0),
            ("started", "running", 1),
            ("retried", "queued", 1),
            ("started", "running", 2),
            ("dead", "dead", 2),
        ]
        assert seen[2].error is not None and seen[2].error.code == "handler_error"
        assert seen[2].run_at is not None and seen[2].run_at >= seen[2].at
        assert seen[-1].error is not None and seen[-1].error.code == "broken"
        retried = await noa.client.post(f"/v1/tasks/{task['id']}/retry")
        assert retried.status_code == 200
        for _ in range(200):
            if seen[-1].event == "dead" and len(seen) > 5:
                break
            await asyncio.sleep(0.02)
        assert [e.event for e in seen[5:]] == ["requeued", "started", "retried", "started", "dead"]


async def test_a_cancelled_task_ends_its_stream(serve: Any, submit: Any) -> None:
    gate, _, _ = gated()
    async with serve({"gate": gate}) as noa:
        task = await submit(noa, type="gate", run_at=4102444800)  # 2100: stays queued
        stream = asyncio.create_task(noa.client.get(f"/v1/tasks/{task['id']}/events"))
        await asyncio.sleep(0.1)
        assert (await noa.client.post(f"/v1/tasks/{task['id']}/cancel")).status_code == 200
        response = await asyncio.wait_for(stream, 5)
        assert [(e["event"], e["state"]) for _, e in parse_sse(response.text)] == [
            ("current", "queued"),
            ("cancelled", "cancelled"),
        ]


async def test_a_workflow_stream_carries_its_steps_and_ends_with_it(serve: Any) -> None:
    async def double(ctx: TaskContext, job: dict[str, Any]) -> int:
        await asyncio.sleep(0.05)
        return int(job["n"]) * 2

    async with serve({"double": TaskType(double)}) as noa:
        body = {
            "steps": [
                {"id": "a", "type": "double", "input": {"n": 1}},
                {"id": "b", "type": "double", "input": {"n": {"$ref": "a.output"}},
                 "depends_on": ["a"]},
            ]
        }  # fmt: skip
        created = await noa.client.post("/v1/workflows", json=body)
        assert created.status_code == 201, created.text
        flow = created.json()["id"]
        response = await asyncio.wait_for(noa.client.get(f"/v1/workflows/{flow}/events"), 5)
        events = parse_sse(response.text)
        assert events[0][0] == "workflow" and events[0][1]["event"] == "current"
        assert events[-1][0] == "workflow" and events[-1][1]["state"] == "succeeded"
        assert events[-1][1]["steps"] == {"a": "succeeded", "b": "succeeded"}
        steps = [(e["step_id"], e["event"]) for name, e in events if name == "task"]
        assert ("b", "succeeded") in steps and ("b", "started") in steps
        missing = await noa.client.get("/v1/workflows/nope/events")
        assert missing.status_code == 404


async def test_an_idle_stream_sends_heartbeats_and_a_gone_client_unsubscribes() -> None:
    broker = InProcessBroker()
    now = 1.0
    current = TaskEvent(event="current", id="t1", type="x", state="queued", attempt=0, at=now,
                        created_at=now)  # fmt: skip

    async def read() -> TaskEvent:
        return current

    response = await follow(broker, task_subject("t1"), read, kind="task", heartbeat_s=0.02)
    chunks: list[bytes] = []

    async def client() -> None:
        async for chunk in response.iterator:
            chunks.append(chunk if isinstance(chunk, bytes) else chunk.encode())

    reading = asyncio.create_task(client())
    await asyncio.sleep(0.15)
    assert len(broker._subscribers) == 1
    reading.cancel()  # what Litestar does when the client disconnects
    with contextlib.suppress(asyncio.CancelledError):
        await reading
    text = b"".join(chunks).decode()
    assert parse_sse(text)[0] == ("task", msgspec.to_builtins(current))
    assert text.count(": keep-alive") >= 3
    assert broker._subscribers == []
    await broker.close()


async def test_a_stream_outlives_the_http_request_timeout(serve: Any, submit: Any) -> None:
    gate, started, release = gated()
    async with serve({"gate": gate}, config={"http": {"request_timeout_s": 0.2}}) as noa:
        task = await submit(noa, type="gate")
        await started.wait()
        stream = asyncio.create_task(noa.client.get(f"/v1/tasks/{task['id']}/events"))
        await asyncio.sleep(0.6)  # three request timeouts
        release.set()
        response = await asyncio.wait_for(stream, 5)
        events = [e["event"] for _, e in parse_sse(response.text)]
        assert events == ["current", "succeeded"]


@pytest.mark.nats
async def test_a_stream_on_one_server_follows_a_task_run_by_another(serve: Any) -> None:
    """Two servers on one database and one NATS stream: the SSE client of the server
    that does not run the task still sees it end."""
    tag = uuid.uuid4().hex[:12]
    ran_on: list[str] = []
    release = asyncio.Event()

    def gate(name: str) -> dict[str, TaskType]:
        async def wait(ctx: TaskContext, job: dict[str, Any]) -> str:
            ran_on.append(name)
            await release.wait()
            return name

        return {"gate": TaskType(wait)}

    config = {
        "drivers": {"broker": "nats"},
        "broker": {"nats_stream": f"NOATEST_{tag}", "subject_prefix": f"noatest{tag}"},
    }
    try:
        async with (
            serve(gate("a"), config=config, lease_s=5.0) as a,
            serve(gate("b"), config=config, lease_s=5.0) as b,
        ):
            created = await a.client.post("/v1/tasks", json={"type": "gate"})
            task_id = created.json()["id"]
            for _ in range(250):
                if ran_on:
                    break
                await asyncio.sleep(0.02)
            assert len(ran_on) == 1, ran_on
            watcher = b if ran_on[0] == "a" else a
            stream = asyncio.create_task(watcher.client.get(f"/v1/tasks/{task_id}/events"))
            await asyncio.sleep(0.3)
            release.set()
            response = await asyncio.wait_for(stream, 10)
            events = [(e["event"], e["state"]) for _, e in parse_sse(response.text)]
            assert events[0] == ("current", "running")
            assert events[-1] == ("succeeded", "succeeded")
    finally:
        nc = await nats.connect("nats://127.0.0.1:4222")
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(f"NOATEST_{tag}")
        await nc.close()
