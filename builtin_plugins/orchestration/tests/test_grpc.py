"""``noa.v1.OrchestrationService`` over gRPC: a real kernel with its real grpc.aio server,
driven by the generated client stubs, answering as ``/v1/tasks`` and ``/v1/workflows``
do on the same tasks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from google.protobuf import json_format, struct_pb2
from noa.builtin_plugins.storage.config import StorageConfig
from noa.builtin_plugins.storage.migrate import Migrator, make_engine
from noa.plugin_sdk.tasks import TaskContext, TaskType
from noa.plugin_sdk.testing.harness import KernelUnderTest, boot
from noa.proto.v1 import orchestration_pb2 as pb
from noa.proto.v1 import orchestration_pb2_grpc as pb_grpc

from .conftest import FAST, task_plugin

PLUGINS = ["http", "observability", "storage", "broker", "orchestration", "grpc"]
GRPC = {"enabled": True, "port": 0}
FAR_FUTURE = 4102444800.0  # 2100: a task submitted to run then stays queued
SECRET = "test-secret-of-at-least-32-bytes-0123456789"
ISSUER = "https://issuer.test"

Server = Callable[..., AbstractAsyncContextManager[tuple[KernelUnderTest, Any]]]


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def as_json(message: Any) -> dict[str, Any]:
    """A message as JSON with REST's field names, nulls left out."""
    found = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return {key: value for key, value in found.items() if value is not None}


def without_nulls(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if value is not None}


async def rest_of(call: Any) -> list[Any]:
    """What a server stream still sends (after ``read()``: its iterator can't be mixed)."""
    found = []
    while (message := await call.read()) is not grpc.aio.EOF:
        found.append(message)
    return found


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Gate:
    """A task type whose runs wait until the test opens the gate."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.opened = asyncio.Event()
        self.task_type = TaskType(self._run)

    async def _run(self, ctx: TaskContext, job: dict[str, Any]) -> str:
        self.started.set()
        await self.opened.wait()
        return "opened"


async def double(ctx: TaskContext, job: dict[str, Any]) -> dict[str, Any]:
    # range() refuses a float: the input's integers arrive as integers.
    return {"doubled": [job["n"] * 2 for _ in range(job["n"])]}


async def migrated(folder: str, apps: dict[str, str]) -> str:
    await Migrator(make_engine("sqlite", StorageConfig(), folder), apps).apply()
    return folder


@pytest.fixture
def server(tmp_path: Path) -> Server:
    """``async with server(task_types, **orchestration) as (noa, stub)``."""

    @asynccontextmanager
    async def booted(
        task_types: dict[str, TaskType], **settings: Any
    ) -> AsyncIterator[tuple[KernelUnderTest, Any]]:
        apps = {"orchestration": "noa.builtin_plugins.orchestration.piccolo_app"}
        data_dir = await migrated(str(tmp_path / "data"), apps)
        config = {
            "server": {"data_dir": data_dir},
            "orchestration": {**FAST, **settings},
            "grpc": GRPC,
        }
        extra = {"task_kit": task_plugin(task_types)}
        async with boot(PLUGINS, config=config, extra_plugins=extra) as noa:
            port = noa.kernel.state["noa.grpc.server"].port
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield noa, pb_grpc.OrchestrationServiceStub(channel)

    return booted


async def test_a_submitted_task_is_watched_from_queued_to_succeeded(server: Server) -> None:
    gate = Gate()
    async with server({"gate": gate.task_type, "double": TaskType(double)}, concurrency=1) as (
        noa,
        stub,
    ):
        # The gate holds the only worker slot: the next task stays queued meanwhile.
        held = await stub.SubmitTask(pb.SubmitTaskRequest(type="gate"))
        await gate.started.wait()
        task = await stub.SubmitTask(
            pb.SubmitTaskRequest(type="double", input=struct({"n": 3}), priority=5)
        )
        assert (task.state, task.created, task.priority) == ("queued", True, 5)
        watch = stub.WatchTask(pb.WatchTaskRequest(id=task.id), timeout=30)
        first = await watch.read()
        assert (first.event, first.state, first.id, first.type) == (
            "current",
            "queued",
            task.id,
            "double",
        )
        gate.opened.set()
        events = [first, *await rest_of(watch)]
        assert await watch.code() == grpc.StatusCode.OK
        states = [e.state for n, e in enumerate(events) if n == 0 or events[n - 1].state != e.state]
        assert states == ["queued", "running", "succeeded"]
        assert "started" in [e.event for e in events]
        last = events[-1]
        assert (last.event, last.attempt) == ("succeeded", 1)
        assert last.finished_at >= last.started_at >= last.created_at

        answer = await stub.GetTask(pb.GetTaskRequest(id=task.id))
        assert json_format.MessageToDict(answer.output) == {"doubled": [6, 6, 6]}
        rest = (await noa.client.get(f"/v1/tasks/{task.id}")).json()
        got = as_json(answer)
        assert got.pop("created") is False
        assert got == without_nulls(rest)

        listed = await stub.ListTasks(pb.ListTasksRequest(state="succeeded"))
        assert {t.id for t in listed.tasks} == {held.id, task.id}
        rest_list = (await noa.client.get("/v1/tasks", params={"state": "succeeded"})).json()
        assert [t.id for t in listed.tasks] == [t["id"] for t in rest_list["tasks"]]

        # A finished task's stream is its state alone.
        again = [e async for e in stub.WatchTask(pb.WatchTaskRequest(id=task.id), timeout=30)]
        assert [(e.event, e.state) for e in again] == [("current", "succeeded")]


async def test_idempotency_keys_and_a_clients_mistakes(server: Server) -> None:
    async with server({"double": TaskType(double)}, max_queued=2) as (noa, stub):
        request = pb.SubmitTaskRequest(
            type="double", input=struct({"n": 1}), idempotency_key="order-7", run_at=FAR_FUTURE
        )
        first = await stub.SubmitTask(request)
        second = await stub.SubmitTask(request)
        assert (first.created, second.created) == (True, False)
        assert second.id == first.id and second.idempotency_key == "order-7"
        # REST finds the same task by the same key.
        body = {"type": "double", "input": {"n": 1}, "idempotency_key": "order-7"}
        rest = await noa.client.post("/v1/tasks", json=body)
        assert (rest.status_code, rest.json()["id"]) == (200, first.id)

        async def code_of(call: Any) -> tuple[grpc.StatusCode, str]:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            return caught.value.code(), caught.value.details() or ""

        code, details = await code_of(stub.SubmitTask(pb.SubmitTaskRequest(type="nothing")))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown task type" in details
        code, _ = await code_of(stub.SubmitTask(pb.SubmitTaskRequest(type="")))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        code, _ = await code_of(stub.SubmitTask(pb.SubmitTaskRequest(type="double", priority=5000)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        code, _ = await code_of(stub.ListTasks(pb.ListTasksRequest(state="asleep")))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        for call in (
            stub.GetTask(pb.GetTaskRequest(id="nope")),
            stub.CancelTask(pb.CancelTaskRequest(id="nope")),
            stub.GetWorkflow(pb.GetWorkflowRequest(id="nope")),
        ):
            assert (await code_of(call))[0] == grpc.StatusCode.NOT_FOUND
        watch = stub.WatchTask(pb.WatchTaskRequest(id="nope"), timeout=30)
        assert (await code_of(watch.read()))[0] == grpc.StatusCode.NOT_FOUND

        # orchestration.max_queued is 2: the second queued task fills the queue.
        await stub.SubmitTask(pb.SubmitTaskRequest(type="double", run_at=FAR_FUTURE))
        full = stub.SubmitTask(pb.SubmitTaskRequest(type="double", input=struct({"n": 1})))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await full
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "retry-after" in dict(caught.value.trailing_metadata() or ())


async def test_cancelling_a_task_ends_its_watch_and_a_finished_one_cannot_be(
    server: Server,
) -> None:
    async with server({"double": TaskType(double)}) as (noa, stub):
        task = await stub.SubmitTask(pb.SubmitTaskRequest(type="double", run_at=FAR_FUTURE))
        watch = stub.WatchTask(pb.WatchTaskRequest(id=task.id), timeout=30)
        assert (await watch.read()).state == "queued"
        cancelled = await stub.CancelTask(pb.CancelTaskRequest(id=task.id))
        assert cancelled.state == "cancelled"
        assert [(e.event, e.state) for e in await rest_of(watch)] == [("cancelled", "cancelled")]
        assert (await noa.client.get(f"/v1/tasks/{task.id}")).json()["state"] == "cancelled"
        for call in (
            stub.CancelTask(pb.CancelTaskRequest(id=task.id)),
            stub.RetryTask(pb.RetryTaskRequest(id=task.id)),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert task.id in (caught.value.details() or "")


async def test_a_watch_ends_at_its_deadline_or_when_the_client_cancels(server: Server) -> None:
    async with server({"double": TaskType(double)}) as (noa, stub):
        task = await stub.SubmitTask(pb.SubmitTaskRequest(type="double", run_at=FAR_FUTURE))
        watch = stub.WatchTask(pb.WatchTaskRequest(id=task.id), timeout=0.5)
        assert (await watch.read()).state == "queued"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await watch.read()
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        cancelled = stub.WatchTask(pb.WatchTaskRequest(id=task.id))
        assert (await cancelled.read()).state == "queued"
        cancelled.cancel()

        # The server ended both calls (and so their broker subscriptions).
        watch_calls = {"grpc_service": "noa.v1.OrchestrationService", "grpc_method": "WatchTask"}
        for _ in range(500):
            text = (await noa.client.get("/metrics")).text
            ended = {
                code: metric(text, "grpc_server_handled_total", grpc_code=code, **watch_calls)
                for code in ("DEADLINE_EXCEEDED", "CANCELLED")
            }
            if all(ended.values()):
                break
            await asyncio.sleep(0.02)
        assert ended == {"DEADLINE_EXCEEDED": 1, "CANCELLED": 1}


async def test_a_workflow_over_grpc_equals_its_rest_view(server: Server) -> None:
    async with server({"double": TaskType(double)}) as (noa, stub):
        body = {
            "steps": [
                {"id": "a", "type": "double", "input": {"n": 1}},
                {"id": "b", "type": "double", "input": {"n": 2}, "depends_on": ["a"]},
            ],
            "max_parallel": 2,
        }
        flow = await stub.SubmitWorkflow(pb.SubmitWorkflowRequest(workflow=struct(body)))
        assert flow.state in ("running", "succeeded") and flow.detail["max_parallel"] == 2
        for _ in range(500):
            flow = await stub.GetWorkflow(pb.GetWorkflowRequest(id=flow.id))
            if flow.state != "running":
                break
            await asyncio.sleep(0.02)
        assert flow.state == "succeeded"
        rest = (await noa.client.get(f"/v1/workflows/{flow.id}")).json()
        assert json_format.MessageToDict(flow.detail) == rest
        assert rest["steps"][1]["output"] == {"doubled": [4, 4]}
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CancelWorkflow(pb.CancelWorkflowRequest(id=flow.id))
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        cycle = {
            "steps": [
                {"id": "a", "type": "double", "depends_on": ["b"]},
                {"id": "b", "type": "double", "depends_on": ["a"]},
            ]
        }
        unknown_type = {"steps": [{"id": "a", "type": "nothing"}]}
        bad: dict[str, Any]
        for bad in (cycle, {"steps": []}, unknown_type):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.SubmitWorkflow(pb.SubmitWorkflowRequest(workflow=struct(bad)))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad

        running = await stub.SubmitWorkflow(
            pb.SubmitWorkflowRequest(
                workflow=struct({"steps": [{"id": "later", "type": "double", "input": {"n": 1}}]})
            )
        )
        # A step runs as soon as it is queued: cancel whatever is left.
        if running.state == "running":
            stopped = await stub.CancelWorkflow(pb.CancelWorkflowRequest(id=running.id))
            assert stopped.state == "cancelled"


def token(scope: str) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "noa", "sub": "alice", "iat": now, "exp": now + 300}
    return jwt.encode({**claims, "scope": scope}, SECRET, algorithm="HS256")


async def test_each_method_needs_the_scope_of_its_rest_route(tmp_path: Path) -> None:
    apps = {
        "orchestration": "noa.builtin_plugins.orchestration.piccolo_app",
        "audit": "noa.builtin_plugins.audit.piccolo_app",
        "cache": "noa.builtin_plugins.cache.piccolo_app",
        "auth": "noa.builtin_plugins.auth.piccolo_app",
    }
    config = {
        "server": {"data_dir": await migrated(str(tmp_path / "data"), apps)},
        "orchestration": FAST,
        "auth": {
            "anonymous": "off",
            "jwt_keys": [{"algorithms": ["HS256"], "secret": {"env": "TEST_JWT_SECRET"}}],
            "jwt_issuer": ISSUER,
            "jwt_audience": "noa",
        },
        "grpc": GRPC,
    }
    plugins = ["http", "storage", "broker", "cache", "audit", "auth", "orchestration", "grpc"]
    extra = {"task_kit": task_plugin({"double": TaskType(double)})}
    env = {"TEST_JWT_SECRET": SECRET}
    async with boot(plugins, config=config, extra_plugins=extra, environ=env) as noa:
        port = noa.kernel.state["noa.grpc.server"].port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.OrchestrationServiceStub(channel)

            async def code_of(call: Any, scope: str | None) -> tuple[grpc.StatusCode, str]:
                metadata = () if scope is None else (("authorization", f"Bearer {token(scope)}"),)
                try:
                    await call(metadata=metadata, timeout=30)
                except grpc.aio.AioRpcError as exc:
                    return exc.code(), exc.details() or ""
                return grpc.StatusCode.OK, ""

            submit = stub.SubmitTask
            new = pb.SubmitTaskRequest(type="double", input=struct({"n": 1}), run_at=FAR_FUTURE)
            assert (await code_of(lambda **kw: submit(new, **kw), None))[0] == (
                grpc.StatusCode.UNAUTHENTICATED
            )
            code, details = await code_of(lambda **kw: submit(new, **kw), "tasks:read")
            assert code == grpc.StatusCode.PERMISSION_DENIED and "tasks:submit" in details
            created = await submit(
                new, metadata=(("authorization", f"Bearer {token('tasks:submit')}"),)
            )
            get = pb.GetTaskRequest(id=created.id)
            assert (await code_of(lambda **kw: stub.GetTask(get, **kw), "tasks:read"))[0] == (
                grpc.StatusCode.OK
            )
            code, details = await code_of(lambda **kw: stub.GetTask(get, **kw), "tasks:submit")
            assert code == grpc.StatusCode.PERMISSION_DENIED and "tasks:read" in details
            cancel = pb.CancelTaskRequest(id=created.id)
            code, details = await code_of(lambda **kw: stub.CancelTask(cancel, **kw), "tasks:read")
            assert code == grpc.StatusCode.PERMISSION_DENIED and "tasks:admin" in details
            assert (await code_of(lambda **kw: stub.CancelTask(cancel, **kw), "tasks:admin"))[
                0
            ] == grpc.StatusCode.OK

            flow = struct({"steps": [{"id": "a", "type": "double", "input": {"n": 1}}]})
            run = pb.RunWorkflowRequest(workflow=flow, timeout_s=0.1)
            code, details = await code_of(lambda **kw: stub.RunWorkflow(run, **kw), "tasks:read")
            assert code == grpc.StatusCode.PERMISSION_DENIED and "tasks:submit" in details
            assert (await code_of(lambda **kw: stub.RunWorkflow(run, **kw), "tasks:submit"))[
                0
            ] == grpc.StatusCode.OK
            watch = pb.WatchWorkflowRequest(id="nope")
            code, details = await code_of(
                lambda **kw: stub.WatchWorkflow(watch, **kw).read(), "tasks:submit"
            )
            assert code == grpc.StatusCode.PERMISSION_DENIED and "tasks:read" in details
            code, _ = await code_of(
                lambda **kw: stub.WatchWorkflow(watch, **kw).read(), "tasks:read"
            )
            assert code == grpc.StatusCode.NOT_FOUND


def kind_of(event: pb.WorkflowEvent) -> tuple[str, str, str]:
    """A WatchWorkflow event as (``workflow``, its event, its state) or (``task``, the
    step, its event)."""
    if event.WhichOneof("kind") == "workflow":
        return "workflow", event.workflow.event, event.workflow.state
    return "task", event.task.step_id, event.task.event


async def test_a_workflow_is_watched_with_its_steps_tasks_until_it_ends(server: Server) -> None:
    gate = Gate()
    async with server({"gate": gate.task_type, "double": TaskType(double)}) as (noa, stub):
        body = {
            "steps": [
                {"id": "a", "type": "gate"},
                {"id": "b", "type": "double", "input": {"n": 2}, "depends_on": ["a"]},
            ]
        }
        flow = await stub.SubmitWorkflow(pb.SubmitWorkflowRequest(workflow=struct(body)))
        await gate.started.wait()
        watch = stub.WatchWorkflow(pb.WatchWorkflowRequest(id=flow.id), timeout=30)
        first = await watch.read()
        assert kind_of(first) == ("workflow", "current", "running")
        assert first.workflow.id == flow.id
        assert dict(first.workflow.steps) == {"a": "running", "b": "pending"}
        assert not first.workflow.HasField("finished_at")
        gate.opened.set()
        events = [first, *await rest_of(watch)]
        assert await watch.code() == grpc.StatusCode.OK

        last = events[-1]
        assert kind_of(last) == ("workflow", "changed", "succeeded")
        assert dict(last.workflow.steps) == {"a": "succeeded", "b": "succeeded"}
        assert last.workflow.finished_at >= last.workflow.created_at
        tasks = [e.task for e in events if e.WhichOneof("kind") == "task"]
        assert "b" in {t.step_id for t in tasks}
        assert {t.workflow_id for t in tasks} == {flow.id}
        rest = (await noa.client.get(f"/v1/workflows/{flow.id}")).json()
        task_ids = {step["id"]: step["task_id"] for step in rest["steps"]}
        assert all(task_ids[t.step_id] == t.id for t in tasks)

        # An ended workflow's stream is its state alone; an unknown one is NOT_FOUND.
        again = [e async for e in stub.WatchWorkflow(pb.WatchWorkflowRequest(id=flow.id))]
        assert [kind_of(e) for e in again] == [("workflow", "current", "succeeded")]
        missing = stub.WatchWorkflow(pb.WatchWorkflowRequest(id="nope"), timeout=30)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await missing.read()
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_cancelling_a_workflow_ends_its_watch(server: Server) -> None:
    gate = Gate()
    async with server({"gate": gate.task_type}) as (_, stub):
        body = {"steps": [{"id": "a", "type": "gate"}, {"id": "b", "type": "gate"}]}
        flow = await stub.SubmitWorkflow(pb.SubmitWorkflowRequest(workflow=struct(body)))
        watch = stub.WatchWorkflow(pb.WatchWorkflowRequest(id=flow.id), timeout=30)
        assert kind_of(await watch.read())[0::2] == ("workflow", "running")
        await stub.CancelWorkflow(pb.CancelWorkflowRequest(id=flow.id))
        last = (await rest_of(watch))[-1]
        assert kind_of(last) == ("workflow", "changed", "cancelled")
        assert set(last.workflow.steps.values()) == {"cancelled"}


async def test_run_workflow_answers_its_end_or_its_state_after_the_wait(server: Server) -> None:
    gate = Gate()
    async with server({"gate": gate.task_type, "double": TaskType(double)}, max_wait_s=0.5) as (
        noa,
        stub,
    ):
        chain = {
            "steps": [
                {"id": "a", "type": "double", "input": {"n": 1}},
                {"id": "b", "type": "double", "input": {"n": {"$ref": "a.output.doubled.0"}},
                 "depends_on": ["a"]},
            ]
        }  # fmt: skip
        call = stub.RunWorkflow(pb.RunWorkflowRequest(workflow=struct(chain)), timeout=30)
        done = await call
        assert done.state == "succeeded"
        assert dict(await call.initial_metadata())["noa-workflow-id"] == done.id
        rest = (await noa.client.get(f"/v1/workflows/{done.id}")).json()
        assert json_format.MessageToDict(done.detail) == rest
        assert rest["steps"][1]["output"] == {"doubled": [4, 4]}

        # Still running at the end of the wait: its state as it is (REST's 202). Unset,
        # the wait is 60 s, capped here by orchestration.max_wait_s (0.5 s).
        held = {"steps": [{"id": "a", "type": "gate"}]}
        for request in (
            pb.RunWorkflowRequest(workflow=struct(held), timeout_s=0.1),
            pb.RunWorkflowRequest(workflow=struct(held)),
        ):
            running = await stub.RunWorkflow(request, timeout=30)
            assert running.state == "running"
            assert running.detail["steps"][0]["state"] == "running"

        # A deadline before the end: DEADLINE_EXCEEDED, the id already sent; it goes on.
        late = stub.RunWorkflow(
            pb.RunWorkflowRequest(workflow=struct(held), timeout_s=60), timeout=0.2
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await late
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        late_id = dict(await late.initial_metadata())["noa-workflow-id"]
        gate.opened.set()
        flow = await stub.GetWorkflow(pb.GetWorkflowRequest(id=late_id))
        assert flow.state in ("running", "succeeded")
        watched = [e async for e in stub.WatchWorkflow(pb.WatchWorkflowRequest(id=late_id))]
        assert kind_of(watched[-1])[0::2] == ("workflow", "succeeded")

        for bad in (
            pb.RunWorkflowRequest(workflow=struct(chain), timeout_s=0),
            pb.RunWorkflowRequest(workflow=struct({"steps": []})),
            pb.RunWorkflowRequest(workflow=struct({"steps": [{"id": "a", "type": "nothing"}]})),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.RunWorkflow(bad, timeout=30)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
