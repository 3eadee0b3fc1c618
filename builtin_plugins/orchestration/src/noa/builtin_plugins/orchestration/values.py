"""The values of the task and workflow APIs: submissions, what clients see, failures."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec
from noa.plugin_sdk.errors import BadRequest

__all__ = [
    "STATES",
    "NewSchedule",
    "NewStep",
    "NewTask",
    "NewWorkflow",
    "ScheduleList",
    "ScheduleView",
    "State",
    "StepView",
    "TaskError",
    "TaskList",
    "TaskView",
    "WorkflowList",
    "WorkflowView",
    "check_listing",
]

State = Literal["queued", "running", "succeeded", "cancelled", "dead"]
STATES: tuple[str, ...] = ("queued", "running", "succeeded", "cancelled", "dead")
# States a task does not leave by itself.
FINISHED: tuple[str, ...] = ("succeeded", "cancelled", "dead")

TypeName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class NewTask(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A submission. Unset timeout and retries take the task type's defaults."""

    type: TypeName
    input: dict[str, Any] = msgspec.field(default_factory=dict)
    # Higher first, among tasks that are due together.
    priority: Annotated[int, msgspec.Meta(ge=-1000, le=1000)] = 0
    # Not before this instant: epoch seconds or an ISO 8601 date-time with a zone.
    run_at: float | dt.datetime | None = None
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    # A second submission with the same key returns the first task (200) instead.
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None


class NewSchedule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A cron schedule: a task of ``type`` with ``input`` at every time ``cron`` names
    (five fields: minute hour day-of-month month day-of-week) in ``timezone``."""

    cron: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    # An IANA zone name ("Europe/Berlin"); daylight-saving changes follow it.
    timezone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "UTC"
    type: TypeName
    input: dict[str, Any] = msgspec.field(default_factory=dict)
    priority: Annotated[int, msgspec.Meta(ge=-1000, le=1000)] = 0
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None


class ScheduleView(msgspec.Struct, kw_only=True):
    id: str
    cron: str
    timezone: str
    type: str
    input: Any
    priority: int
    # Null: the task type's default at each fire.
    timeout_s: float | None = None
    max_retries: int | None = None
    paused: bool
    # Epoch seconds: the next fire time, and the last one with the task it made.
    next_run_at: float
    last_run_at: float | None = None
    last_task_id: str | None = None
    created_at: float
    updated_at: float


class ScheduleList(msgspec.Struct, kw_only=True):
    schedules: list[ScheduleView]


class TaskError(msgspec.Struct, frozen=True, kw_only=True):
    """Why the last run failed; ``attempt`` is that run's number."""

    code: str
    message: str
    attempt: int = 0


class TaskView(msgspec.Struct, kw_only=True):
    id: str
    type: str
    state: State
    priority: int
    input: Any
    # What the handler returned (succeeded); null before.
    output: Any = None
    # The last failure (kept when a retry succeeds later); null when none.
    error: TaskError | None = None
    # Runs started so far, and how many may follow a failed one.
    attempts: int
    max_retries: int
    timeout_s: float
    # Epoch seconds: when it may run (next, for a retry), and its history.
    run_at: float
    idempotency_key: str | None = None
    progress: float = 0.0
    progress_message: str = ""
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    # A workflow step's task: its workflow and step.
    workflow_id: str | None = None
    step_id: str | None = None


class TaskList(msgspec.Struct, kw_only=True):
    tasks: list[TaskView]


# -- workflows ---------------------------------------------------------------------------

StepId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
StepState = Literal["pending", "running", "succeeded", "failed", "skipped", "cancelled"]
WorkflowState = Literal["running", "succeeded", "failed", "cancelled"]
FailurePolicy = Literal["fail_fast", "continue"]


class NewStep(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One step: a task of ``type`` run once every step in ``depends_on`` succeeded.
    ``input`` may hold references to those steps' outputs (``{"$ref": "a.output.x"}``)."""

    id: StepId
    type: TypeName
    input: dict[str, Any] = msgspec.field(default_factory=dict)
    depends_on: list[StepId] = msgspec.field(default_factory=list)
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None


class NewWorkflow(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    steps: Annotated[list[NewStep], msgspec.Meta(min_length=1)]
    # fail_fast: a failed step cancels the rest and fails the workflow. continue: the
    # steps that don't depend on it go on; its dependents are skipped.
    failure_policy: FailurePolicy = "fail_fast"
    # Steps running (their tasks queued or running) at the same time, at most.
    max_parallel: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 4


class StepView(msgspec.Struct, kw_only=True):
    id: str
    type: str
    state: StepState
    depends_on: list[str]
    # The step's task (``/v1/tasks/{task_id}``) once it was started.
    task_id: str | None = None
    # The input as the task got it (references resolved) once started, else as submitted.
    input: Any = None
    output: Any = None
    error: TaskError | None = None
    attempts: int = 0


class WorkflowList(msgspec.Struct, kw_only=True):
    workflows: list[WorkflowView]


class WorkflowView(msgspec.Struct, kw_only=True):
    id: str
    # succeeded: every step succeeded; failed: a step failed (fail_fast) or a step did
    # not succeed (continue, once every step ended); cancelled: by a client.
    state: WorkflowState
    failure_policy: FailurePolicy
    max_parallel: int
    steps: list[StepView]
    created_at: float
    updated_at: float
    finished_at: float | None = None


def check_listing(
    limit: int, most: int, state: str | None = None, states: tuple[str, ...] = ()
) -> None:
    """400 naming the parameter for a list request's ``limit`` outside 1 to ``most``
    or a ``state`` filter that is none of ``states``."""
    if state is not None and state not in states:
        raise BadRequest(
            f"unknown state {state!r}; one of {', '.join(states)}",
            code="invalid_state",
            param="state",
        )
    if not 1 <= limit <= most:
        raise BadRequest(f"limit must be 1 to {most}", code="invalid_limit", param="limit")
