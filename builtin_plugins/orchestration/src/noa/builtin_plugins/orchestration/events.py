"""Progress events: every task state change and workflow change, published on the
broker for the streaming transports and the SSE routes of every process.

Subjects (one per task and per workflow, so a follower subscribes to one thing):

- ``orchestration.events.tasks.<task id>``: a :class:`TaskEvent` (``queued``,
  ``started``, ``retried``, ``succeeded``, ``dead``, ``cancelled``, ``requeued``,
  ``released``). A workflow step's task events also go to its workflow's subject.
- ``orchestration.events.workflows.<workflow id>``: a :class:`WorkflowEvent` (the
  workflow's state and each step's) after an advancement that changed either.

Not under ``orchestration.tasks``: the work queue's own subjects (its dead letters at
``<queue>.dead``) live there by default.

Best effort and off the hot path: callers only put the event in a bounded buffer; a
few background lanes publish (one lane per task id, so one task's events keep their
order). A full buffer drops the event, a failed publish is logged: a task never waits
for, or fails because of, its events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import msgspec
from noa.builtin_plugins.orchestration.store import TaskStore
from noa.builtin_plugins.orchestration.values import FINISHED, TaskError
from noa.builtin_plugins.orchestration.workflow_store import WorkflowStore
from noa.plugin_sdk.ports.broker import BrokerPort

__all__ = [
    "TASK_SUBJECT",
    "WORKFLOW_SUBJECT",
    "Events",
    "TaskEvent",
    "WorkflowEvent",
    "task_event",
    "task_subject",
    "workflow_subject",
]

log = logging.getLogger("noa.orchestration")

TASK_SUBJECT = "orchestration.events.tasks"
WORKFLOW_SUBJECT = "orchestration.events.workflows"
LANES = 4
# How long closing waits for the buffered events to go out.
DRAIN_S = 2.0
# Workflows whose last published snapshot is remembered (to publish changes only).
_REMEMBERED = 1000

TaskEventName = Literal[
    "current", "queued", "started", "retried", "succeeded", "dead", "cancelled", "requeued",
    "released",
]  # fmt: skip
# The state a task is in after each event ("current" reports the stored state).
_STATE_AFTER = {
    "queued": "queued",
    "started": "running",
    "retried": "queued",
    "requeued": "queued",
    "released": "queued",
    "succeeded": "succeeded",
    "dead": "dead",
    "cancelled": "cancelled",
}
_error = msgspec.json.Decoder(TaskError)


class TaskEvent(msgspec.Struct, kw_only=True):
    """What happened to a task. Epoch seconds; ``at`` is when the event was made."""

    kind: Literal["task"] = "task"
    event: TaskEventName
    id: str
    type: str
    state: str
    # The run it is about (0 before the first).
    attempt: int
    # The last failure: the one that made a ``retried`` or ``dead`` event.
    error: TaskError | None = None
    workflow_id: str | None = None
    step_id: str | None = None
    at: float
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    # When a queued (retried) task may run next.
    run_at: float | None = None


class WorkflowEvent(msgspec.Struct, kw_only=True):
    kind: Literal["workflow"] = "workflow"
    event: Literal["current", "changed"]
    id: str
    state: str
    # Each step's state, by step id, in the workflow's order.
    steps: dict[str, str]
    at: float
    created_at: float
    finished_at: float | None = None


class _Head(msgspec.Struct):
    """Enough of an event to know whether it is the last of its subject."""

    kind: str = ""
    state: str = ""


_head = msgspec.json.Decoder(_Head)


def task_subject(task_id: str) -> str:
    return f"{TASK_SUBJECT}.{task_id}"


def workflow_subject(workflow_id: str) -> str:
    return f"{WORKFLOW_SUBJECT}.{workflow_id}"


def is_final(payload: bytes, kind: str) -> bool:
    """Whether ``payload`` ends a stream of ``kind`` (a task's finished state, or a
    workflow that is no longer running)."""
    try:
        head = _head.decode(payload)
    except msgspec.DecodeError:
        return False
    if head.kind != kind:
        return False
    return head.state in FINISHED if kind == "task" else head.state not in ("", "running")


def task_event(
    row: Mapping[str, Any],
    event: TaskEventName,
    *,
    error: TaskError | None = None,
    run_at: float | None = None,
) -> TaskEvent:
    """The event ``event`` of the task whose row (as stored before or after the change)
    is ``row``; ``error`` and ``run_at`` replace the row's when the change set them."""
    now = time.time()
    state = _STATE_AFTER.get(event, str(row["state"]))
    if error is None and row.get("error"):
        error = _error.decode(str(row["error"]))
    finished = float(row.get("finished_at") or 0) or None
    if finished is None and state in FINISHED:
        finished = now
    started = float(row.get("started_at") or 0) or None
    return TaskEvent(
        event=event,
        id=str(row["id"]),
        type=str(row["type"]),
        state=state,
        attempt=int(row["attempts"]),
        error=error,
        workflow_id=str(row.get("workflow_id") or "") or None,
        step_id=str(row.get("step_id") or "") or None,
        at=now,
        created_at=float(row["created_at"]),
        started_at=started,
        finished_at=finished,
        run_at=run_at if run_at is not None or state != "queued" else float(row["run_at"]),
    )


async def workflow_event(
    store: WorkflowStore, workflow_id: str, event: Literal["current", "changed"]
) -> WorkflowEvent | None:
    row = await store.get(store.db, workflow_id)
    if row is None:
        return None
    steps = await store.steps(store.db, workflow_id)
    return WorkflowEvent(
        event=event,
        id=workflow_id,
        state=str(row["state"]),
        steps={str(s["step_id"]): str(s["state"]) for s in steps},
        at=time.time(),
        created_at=float(row["created_at"]),
        finished_at=float(row["finished_at"]) or None,
    )


# What a lane is asked to publish: a ready task event, a task to read first, or a
# workflow whose snapshot to read.
_Item = tuple[Literal["event"], TaskEvent] | tuple[Literal["lookup", "workflow"], str, str]


class Events:
    """The publisher of one process. Without a broker (not started) it does nothing."""

    __slots__ = ("_broker", "_dropped", "_lanes", "_last", "_tasks", "_workers", "_workflows")

    def __init__(
        self,
        broker: BrokerPort | None = None,
        tasks: TaskStore | None = None,
        workflows: WorkflowStore | None = None,
        *,
        buffer: int = 10_000,
    ) -> None:
        self._broker = broker
        self._tasks = tasks
        self._workflows = workflows
        size = max(1, buffer // LANES)
        self._lanes: list[asyncio.Queue[_Item]] = [asyncio.Queue(size) for _ in range(LANES)]
        self._workers: list[asyncio.Task[None]] = []
        self._dropped = 0
        self._last: OrderedDict[str, tuple[str, tuple[tuple[str, str], ...]]] = OrderedDict()

    async def start(self) -> None:
        if self._broker is None or self._workers:
            return
        loop = asyncio.get_running_loop()
        self._workers = [
            loop.create_task(self._publish(lane), name=f"noa-orchestration-events-{n}")
            for n, lane in enumerate(self._lanes)
        ]

    async def close(self) -> None:
        """Publish what is buffered (for up to ``DRAIN_S``), then stop."""
        if not self._workers:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(q.join() for q in self._lanes)), DRAIN_S)
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    # -- what callers report (never blocks, never raises) -------------------------------

    def task(
        self,
        row: Mapping[str, Any],
        event: TaskEventName,
        *,
        error: TaskError | None = None,
        run_at: float | None = None,
    ) -> None:
        if self._workers:
            try:
                made = task_event(row, event, error=error, run_at=run_at)
                self._put(str(row["id"]), ("event", made))
            except Exception as exc:  # a row missing a column: the task goes on
                log.debug("task event %s not made: %s", event, exc)

    def tasks(self, task_ids: Iterable[str], event: TaskEventName) -> None:
        """Events of tasks whose rows the caller does not hold (read before publishing)."""
        if self._workers:
            for task_id in task_ids:
                self._put(task_id, ("lookup", task_id, event))

    def workflow(self, workflow_id: str) -> None:
        """The workflow may have changed: publish its snapshot if it differs from the
        last one this process published."""
        if self._workers:
            self._put(workflow_id, ("workflow", workflow_id, "changed"))

    def _put(self, key: str, item: _Item) -> None:
        lane = self._lanes[zlib.crc32(key.encode()) % LANES]
        try:
            lane.put_nowait(item)
        except asyncio.QueueFull:
            self._dropped += 1
            if self._dropped in (1, 10, 100) or self._dropped % 1000 == 0:
                log.warning("orchestration events: buffer full, %d event(s) dropped", self._dropped)

    # -- the lanes ----------------------------------------------------------------------

    async def _publish(self, lane: asyncio.Queue[_Item]) -> None:
        while True:
            item = await lane.get()
            try:
                await self._send(item)
            except Exception as exc:
                log.warning("orchestration event not published: %s: %s", type(exc).__name__, exc)
            finally:
                lane.task_done()

    async def _send(self, item: _Item) -> None:
        assert self._broker is not None
        if item[0] == "event":
            event: TaskEvent | None = item[1]
        elif item[0] == "lookup":
            row = await self._tasks.get(item[1]) if self._tasks is not None else None
            event = None if row is None else task_event(row, item[2])  # type: ignore[arg-type]
        else:
            await self._send_workflow(item[1])
            return
        if event is None:
            return
        payload = msgspec.json.encode(event)
        await self._broker.publish(task_subject(event.id), payload)
        if event.workflow_id:
            await self._broker.publish(workflow_subject(event.workflow_id), payload)

    async def _send_workflow(self, workflow_id: str) -> None:
        assert self._broker is not None
        if self._workflows is None:
            return
        event = await workflow_event(self._workflows, workflow_id, "changed")
        if event is None:
            return
        seen = (event.state, tuple(event.steps.items()))
        if self._last.get(workflow_id) == seen:
            return
        self._last[workflow_id] = seen
        self._last.move_to_end(workflow_id)
        while len(self._last) > _REMEMBERED:
            self._last.popitem(last=False)
        await self._broker.publish(workflow_subject(workflow_id), msgspec.json.encode(event))
