"""Tasks as clients see them: submit (validated, bounded, idempotent), read, list,
cancel, and re-queue from the dead letters.

A submission is answered once its row is stored: from then on a crash loses nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import msgspec
from noa.builtin_plugins.orchestration.config import OrchestrationConfig
from noa.builtin_plugins.orchestration.events import TaskEvent, TaskEventName, task_event
from noa.builtin_plugins.orchestration.store import TaskStore, view_of
from noa.builtin_plugins.orchestration.values import STATES, NewTask, TaskView, check_listing
from noa.builtin_plugins.orchestration.worker import Worker

if TYPE_CHECKING:
    from noa.builtin_plugins.orchestration.workflows import Workflows
from noa.plugin_sdk.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unprocessable,
)
from noa.plugin_sdk.ports.broker import BrokerPort
from noa.plugin_sdk.tasks import InvalidTaskInput, TaskType

__all__ = ["Tasks"]

log = logging.getLogger("noa.orchestration")

MAX_LIST = 1000


class Tasks:
    def __init__(self, config: OrchestrationConfig) -> None:
        self.config = config
        self._store: TaskStore | None = None
        self._worker: Worker | None = None
        self.task_types: dict[str, TaskType] = {}
        # Set by the plugin: a dead step's task is retried through its workflow.
        self.workflows: Workflows | None = None

    def start(self, store: TaskStore, worker: Worker) -> None:
        self._store, self._worker = store, worker
        self.task_types = worker.task_types

    @property
    def _ready(self) -> tuple[TaskStore, Worker]:
        if self._store is None or self._worker is None:
            raise ServiceUnavailable("orchestration is not started", code="tasks_unavailable")
        return self._store, self._worker

    async def submit(self, new: NewTask) -> tuple[TaskView, bool]:
        """The stored task and whether this call created it (``False``: the idempotency
        key named an existing task, which is returned unchanged)."""
        store, worker = self._ready
        if new.idempotency_key is not None:
            existing = await store.by_idempotency_key(new.idempotency_key)
            if existing is not None:
                return _same_submission(existing, new), False
        task_type, input_json, timeout_s = self.checked(new.type, new.input, new.timeout_s)
        worker.bound.check()
        now = time.time()
        run_at = _epoch(new.run_at, now)
        due = run_at <= now
        task_id = uuid.uuid4().hex
        created = await store.insert(
            task_id=task_id,
            type=new.type,
            input_json=input_json,
            priority=new.priority,
            run_at=run_at,
            timeout_s=timeout_s,
            max_retries=task_type.max_retries if new.max_retries is None else new.max_retries,
            idempotent=task_type.idempotent,
            idempotency_key=new.idempotency_key,
            dispatched_at=now if due else 0.0,
        )
        if created is None:  # the same key, submitted concurrently
            assert new.idempotency_key is not None
            existing = await store.by_idempotency_key(new.idempotency_key)
            if existing is None:
                raise Conflict("the idempotency key is in use", code="idempotency_conflict")
            return _same_submission(existing, new), False
        worker.bound.added()
        if due:
            try:
                await worker.publish(task_id)
            except Exception:  # stored: the scheduler publishes it again later
                log.warning("could not publish task %s; it will be dispatched later", task_id)
        worker.events.task(created, "queued")
        return view_of(created), True

    def checked(
        self, type_name: str, value: dict[str, Any], timeout_s: float | None
    ) -> tuple[TaskType, str, float]:
        """A submission's task type, its input as JSON and its timeout, once they pass
        the checks (registered type, input size and schema, timeout limit); the client
        error naming the field otherwise."""
        task_type = self.task_types.get(type_name)
        if task_type is None:
            known = ", ".join(sorted(self.task_types)) or "none"
            raise Unprocessable(
                f"unknown task type {type_name!r} (registered: {known})",
                code="unknown_task_type",
                param="type",
            )
        input_json = msgspec.json.encode(value).decode()
        if len(input_json) > self.config.max_input_bytes:
            raise PayloadTooLarge(
                f"the task's input takes {len(input_json)} bytes as JSON; at most "
                f"{self.config.max_input_bytes} (orchestration.max_input_bytes)",
                code="input_too_large",
                param="input",
            )
        try:
            task_type.parse_input(value)
        except InvalidTaskInput as exc:
            raise Unprocessable(
                f"invalid input for task type {type_name!r}: {exc}",
                code="invalid_input",
                param="input",
            ) from None
        timeout_s = task_type.timeout_s if timeout_s is None else timeout_s
        if timeout_s > self.config.max_timeout_s:
            raise BadRequest(
                f"timeout_s {timeout_s:g} is above the limit of {self.config.max_timeout_s:g} "
                "(orchestration.max_timeout_s)",
                code="timeout_too_large",
                param="timeout_s",
            )
        return task_type, input_json, timeout_s

    async def get(self, task_id: str) -> TaskView:
        store, _ = self._ready
        row = await store.get(task_id)
        if row is None:
            raise NotFound(f"no task {task_id!r}", code="task_not_found", param="task_id")
        return view_of(row)

    async def find(self, *, state: str | None, type: str | None, limit: int) -> list[TaskView]:
        store, _ = self._ready
        check_listing(limit, MAX_LIST, state, STATES)
        return await store.find(state=state, type=type, limit=limit)

    async def cancel(self, task_id: str) -> TaskView:
        store, worker = self._ready
        if not await store.cancel(task_id):
            view = await self.get(task_id)
            raise Conflict(
                f"task {task_id!r} is {view.state}: only a queued or running task can be cancelled",
                code="task_finished",
            )
        worker.interrupt(task_id)
        return await self._changed(task_id, "cancelled")

    async def retry(self, task_id: str) -> TaskView:
        store, worker = self._ready
        row = await store.get(task_id)
        if row is None:
            raise NotFound(f"no task {task_id!r}", code="task_not_found", param="task_id")
        workflow_id = str(row["workflow_id"] or "")
        if workflow_id and self.workflows is not None:
            queued = await self.workflows.retry_step(task_id, workflow_id)
        else:
            queued = await store.requeue_dead(task_id)
            if queued:
                worker.bound.added()
                worker.wake()
        if not queued:
            view = await self.get(task_id)
            raise Conflict(
                f"task {task_id!r} is {view.state}: only a dead task can be queued again",
                code="task_not_dead",
            )
        return await self._changed(task_id, "requeued")

    async def _changed(self, task_id: str, event: TaskEventName) -> TaskView:
        """The task after a change made here, which is published as ``event``."""
        store, worker = self._ready
        row = await store.get(task_id)
        if row is None:
            raise NotFound(f"no task {task_id!r}", code="task_not_found", param="task_id")
        worker.events.task(row, event)
        return view_of(row)

    async def current(self, task_id: str) -> TaskEvent:
        """The task's present state as an event (the first of its event stream)."""
        store, _ = self._ready
        row = await store.get(task_id)
        if row is None:
            raise NotFound(f"no task {task_id!r}", code="task_not_found", param="task_id")
        return task_event(row, "current")

    @property
    def broker(self) -> BrokerPort:
        return self._ready[1].broker


def _same_submission(existing: dict[str, Any], new: NewTask) -> TaskView:
    """The task an idempotency key names, if it was submitted with the same type and
    input (a resubmission); 409 otherwise (the key was reused for other work)."""
    view = view_of(existing)
    if view.type != new.type or view.input != new.input:
        raise Conflict(
            f"idempotency key {new.idempotency_key!r} was used for task {view.id} of type "
            f"{view.type!r} with another input: use a new key for new work",
            code="idempotency_key_reused",
            param="idempotency_key",
        )
    return view


def _epoch(run_at: float | dt.datetime | None, now: float) -> float:
    if run_at is None:
        return now
    if isinstance(run_at, dt.datetime):
        if run_at.tzinfo is None:
            raise BadRequest(
                "run_at needs a time zone (or give epoch seconds)",
                code="invalid_run_at",
                param="run_at",
            )
        return run_at.timestamp()
    return float(run_at)
