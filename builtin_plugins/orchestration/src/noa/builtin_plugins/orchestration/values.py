"""The values of the task API: a submission, a task as clients see it, a failure."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec

__all__ = ["STATES", "NewTask", "State", "TaskError", "TaskList", "TaskView"]

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


class TaskList(msgspec.Struct, kw_only=True):
    tasks: list[TaskView]
