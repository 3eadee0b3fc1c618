"""``noa.v1.OrchestrationService``: tasks and workflows over gRPC.

Each method calls what its REST route calls (:class:`Tasks`, :class:`Workflows`) and
checks its input with the same msgspec types (``NewTask``, ``NewWorkflow``), so answers
and errors are the same. Scopes as REST: ``tasks:submit`` to submit, ``tasks:read`` to
read, list and watch, ``tasks:admin`` to cancel and retry.

Free-form JSON (a task's input and output, a workflow) travels as
``google.protobuf.Struct`` / ``Value``, whose only number is a double: integral numbers
are read back as integers, so a handler sees ``{"n": 3}`` whichever transport sent it.

``WatchTask`` and ``WatchWorkflow`` are the SSE routes' streams (:func:`.sse.watch`:
subscribe, then read the current state, end after a final state), their events sent as
messages; they end when the client cancels or the call's deadline passes, which
unsubscribes. ``RunWorkflow`` is ``POST /v1/workflow``: submit, then wait; the id goes
out in the initial metadata first, so a client whose deadline passed can still find it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from google.protobuf import json_format, struct_pb2
from noa.builtin_plugins.orchestration.api import ADMIN, READ, SUBMIT
from noa.builtin_plugins.orchestration.events import (
    TaskEvent,
    WorkflowEvent,
    task_subject,
    workflow_subject,
)
from noa.builtin_plugins.orchestration.service import Tasks
from noa.builtin_plugins.orchestration.sse import watch
from noa.builtin_plugins.orchestration.values import (
    NewTask,
    NewWorkflow,
    TaskError,
    TaskView,
    WorkflowView,
)
from noa.builtin_plugins.orchestration.workflow_api import DEFAULT_WAIT_S
from noa.builtin_plugins.orchestration.workflows import Workflows
from noa.plugin_sdk import GrpcService
from noa.plugin_sdk.errors import BadRequest
from noa.proto.v1 import orchestration_pb2 as pb
from noa.proto.v1 import orchestration_pb2_grpc as pb_grpc

__all__ = ["grpc_service"]

# Integers a double holds exactly; past them a number stays a float.
_EXACT = 2**53
_DEFAULT_LIMIT = 100
# Where RunWorkflow sends the workflow's id before it waits.
_WORKFLOW_ID_KEY = "noa-workflow-id"
_task_event = msgspec.json.Decoder(TaskEvent)
_workflow_event = msgspec.json.Decoder(WorkflowEvent)


class _Kind(msgspec.Struct):
    kind: str = ""


_kind = msgspec.json.Decoder(_Kind)


def _plain(value: struct_pb2.Value) -> Any:
    """A ``Value`` as the JSON value it stands for."""
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return _object(value.struct_value)
    if kind == "list_value":
        return [_plain(v) for v in value.list_value.values]
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() and abs(number) <= _EXACT else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


def _object(struct: struct_pb2.Struct) -> dict[str, Any]:
    return {key: _plain(value) for key, value in struct.fields.items()}


def _value(data: Any) -> struct_pb2.Value:
    return json_format.ParseDict(msgspec.to_builtins(data), struct_pb2.Value())


def _error(error: TaskError | None) -> pb.TaskError | None:
    if error is None:
        return None
    return pb.TaskError(code=error.code, message=error.message, attempt=error.attempt)


def _task(view: TaskView, *, created: bool = False) -> pb.Task:
    return pb.Task(
        id=view.id,
        type=view.type,
        state=view.state,
        priority=view.priority,
        input=_value(view.input),
        output=_value(view.output),
        error=_error(view.error),
        attempts=view.attempts,
        max_retries=view.max_retries,
        progress=view.progress,
        progress_message=view.progress_message,
        created_at=view.created_at,
        updated_at=view.updated_at,
        created=created,
        timeout_s=view.timeout_s,
        run_at=view.run_at,
        idempotency_key=view.idempotency_key,
        started_at=view.started_at,
        finished_at=view.finished_at,
    )


def _event(event: TaskEvent) -> pb.TaskEvent:
    return pb.TaskEvent(
        event=event.event,
        id=event.id,
        type=event.type,
        state=event.state,
        attempt=event.attempt,
        error=_error(event.error),
        workflow_id=event.workflow_id,
        step_id=event.step_id,
        at=event.at,
        created_at=event.created_at,
        started_at=event.started_at,
        finished_at=event.finished_at,
        run_at=event.run_at,
    )


def _of_workflow(payload: bytes) -> pb.WorkflowEvent:
    """An event of a workflow's subject: the workflow's own, or one of its tasks'."""
    if _kind.decode(payload).kind == "task":
        return pb.WorkflowEvent(task=_event(_task_event.decode(payload)))
    event = _workflow_event.decode(payload)
    status = pb.WorkflowStatus(
        event=event.event,
        id=event.id,
        state=event.state,
        steps=event.steps,
        at=event.at,
        created_at=event.created_at,
        finished_at=event.finished_at,
    )
    return pb.WorkflowEvent(workflow=status)


async def _follow(
    source: Tasks | Workflows,
    subject: str,
    current: Callable[[], Awaitable[TaskEvent | WorkflowEvent]],
    *,
    kind: str,
    message: Callable[[bytes], Any],
) -> AsyncIterator[Any]:
    """A subject's events as messages, until a final state. No time limit of its own:
    the call's deadline, if any, ends it, and a cancelled call closes the stream at
    once, which unsubscribes. No keep-alives: HTTP/2 has its own pings."""
    following = await watch(source.broker, subject, current, kind=kind)
    events = following.events(source.config.events_heartbeat_s)
    async with contextlib.aclosing(events):
        async for payload in events:
            if payload is not None:
                yield message(payload)


def _workflow(view: WorkflowView) -> pb.Workflow:
    detail = struct_pb2.Struct()
    detail.update(msgspec.to_builtins(view))
    return pb.Workflow(id=view.id, state=view.state, detail=detail)


def _optional(request: Any, *fields: str) -> dict[str, Any]:
    """The ``optional`` fields the caller set: unset ones take the REST defaults."""
    return {name: getattr(request, name) for name in fields if request.HasField(name)}


class OrchestrationServicer(pb_grpc.OrchestrationServiceServicer):
    def __init__(self, tasks: Tasks, workflows: Workflows) -> None:
        self.tasks = tasks
        self.workflows = workflows

    async def SubmitTask(self, request: Any, context: Any) -> Any:
        new = msgspec.convert(
            {
                "type": request.type,
                "input": _object(request.input),
                "priority": request.priority,
                **_optional(request, "timeout_s", "max_retries", "idempotency_key", "run_at"),
            },
            NewTask,
        )
        view, created = await self.tasks.submit(new)
        return _task(view, created=created)

    async def GetTask(self, request: Any, context: Any) -> Any:
        return _task(await self.tasks.get(request.id))

    async def ListTasks(self, request: Any, context: Any) -> Any:
        found = await self.tasks.find(
            state=request.state if request.HasField("state") else None,
            type=request.type if request.HasField("type") else None,
            limit=request.limit if request.HasField("limit") else _DEFAULT_LIMIT,
        )
        return pb.ListTasksResponse(tasks=[_task(view) for view in found])

    async def CancelTask(self, request: Any, context: Any) -> Any:
        return _task(await self.tasks.cancel(request.id))

    async def RetryTask(self, request: Any, context: Any) -> Any:
        return _task(await self.tasks.retry(request.id))

    async def WatchTask(self, request: Any, context: Any) -> AsyncIterator[Any]:
        task_id = request.id
        messages = _follow(
            self.tasks,
            task_subject(task_id),
            lambda: self.tasks.current(task_id),
            kind="task",
            message=lambda payload: _event(_task_event.decode(payload)),
        )
        async with contextlib.aclosing(messages):
            async for message in messages:
                yield message

    async def SubmitWorkflow(self, request: Any, context: Any) -> Any:
        new = msgspec.convert(_object(request.workflow), NewWorkflow)
        return _workflow(await self.workflows.submit(new))

    async def RunWorkflow(self, request: Any, context: Any) -> Any:
        wait_s = request.timeout_s if request.HasField("timeout_s") else DEFAULT_WAIT_S
        if not wait_s > 0:
            raise BadRequest(
                f"timeout_s must be more than 0, not {wait_s}",
                code="invalid_timeout",
                param="timeout_s",
            )
        new = msgspec.convert(_object(request.workflow), NewWorkflow)
        view = await self.workflows.submit(new)
        await context.send_initial_metadata(((_WORKFLOW_ID_KEY, view.id),))
        wait_s = min(wait_s, self.workflows.config.max_wait_s)
        return _workflow(await self.workflows.wait(view.id, wait_s))

    async def GetWorkflow(self, request: Any, context: Any) -> Any:
        return _workflow(await self.workflows.get(request.id))

    async def WatchWorkflow(self, request: Any, context: Any) -> AsyncIterator[Any]:
        workflow_id = request.id
        messages = _follow(
            self.workflows,
            workflow_subject(workflow_id),
            lambda: self.workflows.current(workflow_id),
            kind="workflow",
            message=_of_workflow,
        )
        async with contextlib.aclosing(messages):
            async for message in messages:
                yield message

    async def CancelWorkflow(self, request: Any, context: Any) -> Any:
        return _workflow(await self.workflows.cancel(request.id))


def grpc_service(tasks: Tasks, workflows: Workflows) -> GrpcService:
    """The service, sharing the rate limits of the REST route group ``orchestration``."""
    return GrpcService(
        name="noa.v1.OrchestrationService",
        servicer=OrchestrationServicer(tasks, workflows),
        add_to_server=pb_grpc.add_OrchestrationServiceServicer_to_server,
        scopes={
            "SubmitTask": SUBMIT,
            "SubmitWorkflow": SUBMIT,
            "RunWorkflow": SUBMIT,
            "GetTask": READ,
            "ListTasks": READ,
            "WatchTask": READ,
            "GetWorkflow": READ,
            "WatchWorkflow": READ,
        },
        scope=ADMIN,
        group="orchestration",
        health_checks=("storage", "broker"),
    )
