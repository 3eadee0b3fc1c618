"""The task API: ``/v1/tasks``.

Scopes: ``tasks:submit`` to submit, ``tasks:read`` to read, list and follow (events),
``tasks:admin`` to cancel and to re-queue dead tasks.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.response import ServerSentEvent
from noa.builtin_plugins.orchestration.events import task_subject
from noa.builtin_plugins.orchestration.service import Tasks
from noa.builtin_plugins.orchestration.sse import follow
from noa.builtin_plugins.orchestration.values import NewTask, TaskList, TaskView
from noa.plugin_sdk.auth import SCOPE_OPT

__all__ = ["task_handlers"]

SUBMIT, READ, ADMIN = "tasks:submit", "tasks:read", "tasks:admin"
# Room for the request's other fields around an input of max_input_bytes.
_ENVELOPE_BYTES = 16 * 1024

Limit = Annotated[int, QueryParameter(ge=1, le=1000)]
# "state" is a name Litestar reserves for its application state.
StateQuery = Annotated[str | None, QueryParameter(name="state")]


def task_handlers(tasks: Tasks) -> list[HTTPRouteHandler]:
    tags = ["tasks"]

    @post(
        "/v1/tasks",
        summary="Submit a task",
        tags=tags,
        status_code=201,
        opt={SCOPE_OPT: SUBMIT},
        request_max_body_size=tasks.config.max_input_bytes + _ENVELOPE_BYTES,
    )
    async def submit(data: JSONBody[NewTask]) -> Response[TaskView]:
        """Queue a task of a registered type; 201 once it is stored (a crash loses it no
        more). With an ``idempotency_key`` already used, 200 and that task, unchanged.
        422 for an unknown type or an input its type refuses; 429 with ``Retry-After``
        while ``orchestration.max_queued`` tasks are queued."""
        view, created = await tasks.submit(data)
        return Response(view, status_code=201 if created else 200)

    @get("/v1/tasks", summary="List tasks", tags=tags, opt={SCOPE_OPT: READ})
    async def list_tasks(
        task_state: StateQuery = None, type: FromQuery[str | None] = None, limit: Limit = 100
    ) -> TaskList:
        """The newest tasks first, filtered by ``state`` and ``type``."""
        return TaskList(tasks=await tasks.find(state=task_state, type=type, limit=limit))

    @get("/v1/tasks/dead", summary="List dead tasks", tags=tags, opt={SCOPE_OPT: READ})
    async def list_dead(type: FromQuery[str | None] = None, limit: Limit = 100) -> TaskList:
        """The dead letters: tasks that exhausted their retries or could not run, with
        their last error. ``POST /v1/tasks/{id}/retry`` queues one again."""
        return TaskList(tasks=await tasks.find(state="dead", type=type, limit=limit))

    @get("/v1/tasks/{task_id:str}", summary="Show a task", tags=tags, opt={SCOPE_OPT: READ})
    async def show(task_id: FromPath[str]) -> TaskView:
        return await tasks.get(task_id)

    @get(
        "/v1/tasks/{task_id:str}/events",
        summary="Follow a task's progress (Server-Sent Events)",
        tags=tags,
        opt={SCOPE_OPT: READ},
    )
    async def events(task_id: FromPath[str]) -> ServerSentEvent:
        """``text/event-stream``: the task's current state (``event: task``, a JSON
        ``TaskEvent``), then every change (queued, started, retried, succeeded, dead,
        cancelled, requeued, released) from whichever process made it; ends after
        ``succeeded``, ``dead`` or ``cancelled``. Comment lines every
        ``orchestration.events_heartbeat_s`` keep it open. 404 for an unknown task."""
        return await follow(
            tasks.broker,
            task_subject(task_id),
            lambda: tasks.current(task_id),
            kind="task",
            heartbeat_s=tasks.config.events_heartbeat_s,
        )

    @post(
        "/v1/tasks/{task_id:str}/cancel",
        summary="Cancel a task",
        tags=tags,
        status_code=200,
        opt={SCOPE_OPT: ADMIN},
    )
    async def cancel(task_id: FromPath[str]) -> TaskView:
        """Cancel a queued (or scheduled) task, or stop a running one. 409 once finished."""
        return await tasks.cancel(task_id)

    @post(
        "/v1/tasks/{task_id:str}/retry",
        summary="Re-queue a dead task",
        tags=tags,
        status_code=200,
        opt={SCOPE_OPT: ADMIN},
    )
    async def retry(task_id: FromPath[str]) -> TaskView:
        """Queue a dead task again with its attempts reset. 409 unless it is dead."""
        return await tasks.retry(task_id)

    return [submit, list_tasks, list_dead, show, events, cancel, retry]
