"""The workflow API: ``/v1/workflows`` and ``/v1/workflow`` (submit and wait).

Scopes as for tasks: ``tasks:submit`` to submit, ``tasks:read`` to read, ``tasks:admin``
to cancel.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.response import ServerSentEvent
from noa.builtin_plugins.orchestration.api import ADMIN, READ, SUBMIT
from noa.builtin_plugins.orchestration.events import workflow_subject
from noa.builtin_plugins.orchestration.sse import follow
from noa.builtin_plugins.orchestration.values import NewWorkflow, WorkflowList, WorkflowView
from noa.builtin_plugins.orchestration.workflows import MAX_LIST, Workflows
from noa.plugin_sdk.auth import SCOPE_OPT

__all__ = ["workflow_handlers"]

_ENVELOPE_BYTES = 64 * 1024
DEFAULT_WAIT_S = 60.0

WaitSeconds = Annotated[float, QueryParameter(gt=0)]
Limit = Annotated[int, QueryParameter(ge=1, le=MAX_LIST)]
# "state" is a name Litestar reserves for its application state.
StateQuery = Annotated[str | None, QueryParameter(name="state")]


def workflow_handlers(workflows: Workflows) -> list[HTTPRouteHandler]:
    tags = ["workflows"]
    body_limit = workflows.config.max_input_bytes + _ENVELOPE_BYTES

    @post(
        "/v1/workflows",
        summary="Submit a workflow",
        tags=tags,
        status_code=201,
        opt={SCOPE_OPT: SUBMIT},
        request_max_body_size=body_limit,
    )
    async def submit(data: JSONBody[NewWorkflow]) -> WorkflowView:
        """Store a DAG of steps and start those without dependencies; 201 once stored.
        A step's input may hold ``{"$ref": "<step>.output.<path>"}`` references to the
        outputs of its (transitive) dependencies. 422 naming the step (``details.step``)
        for duplicate ids, unknown task types or steps, cycles, bad references or an
        input its task type refuses; nothing is stored then."""
        return await workflows.submit(data)

    @get("/v1/workflows", summary="List workflows", tags=tags, opt={SCOPE_OPT: READ})
    async def list_workflows(workflow_state: StateQuery = None, limit: Limit = 20) -> WorkflowList:
        """The newest first, each with its steps; ``state`` filters (running,
        succeeded, failed, cancelled)."""
        return WorkflowList(workflows=await workflows.find(state=workflow_state, limit=limit))

    @post(
        "/v1/workflow",
        summary="Run a workflow and wait for its end",
        tags=tags,
        status_code=200,
        opt={SCOPE_OPT: SUBMIT},
        request_max_body_size=body_limit,
    )
    async def run(
        data: JSONBody[NewWorkflow], timeout_s: WaitSeconds = DEFAULT_WAIT_S
    ) -> Response[WorkflowView]:
        """Submit a workflow and answer once it ended: 200 with its final state
        (``succeeded``, ``failed``) and every step's output or error. Still running
        after ``timeout_s`` (capped by ``orchestration.max_wait_s``): 202 with the
        workflow as it is; it goes on, follow it at ``GET /v1/workflows/{id}``."""
        view = await workflows.submit(data)
        view = await workflows.wait(view.id, min(timeout_s, workflows.config.max_wait_s))
        return Response(view, status_code=202 if view.state == "running" else 200)

    @get(
        "/v1/workflows/{workflow_id:str}",
        summary="Show a workflow",
        tags=tags,
        opt={SCOPE_OPT: READ},
    )
    async def show(workflow_id: FromPath[str]) -> WorkflowView:
        """Its state and each step's state, task, input, output and error."""
        return await workflows.get(workflow_id)

    @get(
        "/v1/workflows/{workflow_id:str}/events",
        summary="Follow a workflow's progress (Server-Sent Events)",
        tags=tags,
        opt={SCOPE_OPT: READ},
    )
    async def events(workflow_id: FromPath[str]) -> ServerSentEvent:
        """``text/event-stream``: the workflow's current state (``event: workflow``: its
        state and each step's), then its steps' task events (``event: task``, with
        ``step_id``) and each change of the workflow; ends once it is no longer
        ``running``. 404 for an unknown workflow."""
        return await follow(
            workflows.broker,
            workflow_subject(workflow_id),
            lambda: workflows.current(workflow_id),
            kind="workflow",
            heartbeat_s=workflows.config.events_heartbeat_s,
        )

    @post(
        "/v1/workflows/{workflow_id:str}/cancel",
        summary="Cancel a workflow",
        tags=tags,
        status_code=200,
        opt={SCOPE_OPT: ADMIN},
    )
    async def cancel(workflow_id: FromPath[str]) -> WorkflowView:
        """Cancel its pending steps and the tasks of its running ones; the steps that
        ended keep their results. 409 once the workflow ended."""
        return await workflows.cancel(workflow_id)

    return [submit, list_workflows, run, show, events, cancel]
