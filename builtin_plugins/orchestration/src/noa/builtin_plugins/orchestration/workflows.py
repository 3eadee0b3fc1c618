"""Workflows: a DAG of steps, each run as a task of the task machinery (retries, dead
letters, leases and restart recovery apply to steps as to any task).

*Advancing* a workflow, in one transaction that first locks its row: running steps
whose task ended take its outcome (succeeded; dead -> failed; cancelled); then the
failure policy applies (``fail_fast``: cancel what has not finished and fail the
workflow; ``continue``: skip the dependents of what did not succeed); then pending
steps whose dependencies all succeeded start, up to ``max_parallel`` running, each
with its references resolved and a task whose id is the step's row id, so a step is
started once however many processes advance at the same time; last, a workflow whose
steps all ended is finished.

A workflow is advanced when it is submitted, when one of its tasks ends on this
process, on every worker poll for workflows left behind (a task that ended on a
process that died before advancing), and for every running workflow at start.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import msgspec
from noa.builtin_plugins.orchestration.config import OrchestrationConfig
from noa.builtin_plugins.orchestration.events import WorkflowEvent, workflow_event
from noa.builtin_plugins.orchestration.references import BrokenReference, resolve
from noa.builtin_plugins.orchestration.store import TABLE as _TASKS
from noa.builtin_plugins.orchestration.store import TaskStore
from noa.builtin_plugins.orchestration.values import (
    FINISHED,
    NewWorkflow,
    StepView,
    TaskError,
    WorkflowView,
    check_listing,
)
from noa.builtin_plugins.orchestration.worker import Worker
from noa.builtin_plugins.orchestration.workflow_checks import check_workflow
from noa.builtin_plugins.orchestration.workflow_store import WorkflowStore
from noa.plugin_sdk.errors import (
    Conflict,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
)
from noa.plugin_sdk.ports.broker import BrokerPort
from noa.plugin_sdk.ports.storage import SqlRunner

__all__ = ["Workflows"]

log = logging.getLogger("noa.orchestration")

_error = msgspec.json.Decoder(TaskError)
WORKFLOW_STATES = ("running", "succeeded", "failed", "cancelled")
# Workflows one list may hold (each read with its steps).
MAX_LIST = 100
# A step's state once its task ended in this state.
_OUTCOME = {"succeeded": "succeeded", "dead": "failed", "cancelled": "cancelled"}
_ENDED = ("succeeded", "failed", "skipped", "cancelled")
_NOT_SUCCEEDED = ("failed", "skipped", "cancelled")


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


class _Advance:
    """What an advancement did that must be told to the worker once committed."""

    __slots__ = ("cancelled", "started", "workflow_id")

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        self.started = 0
        self.cancelled: list[str] = []


class Workflows:
    def __init__(self, config: OrchestrationConfig) -> None:
        self.config = config
        self._parts: tuple[TaskStore, WorkflowStore, Worker] | None = None

    def start(self, tasks: TaskStore, workflows: WorkflowStore, worker: Worker) -> None:
        self._parts = (tasks, workflows, worker)
        worker.on_finished = self.advance
        worker.on_tick = self.catch_up

    @property
    def _ready(self) -> tuple[TaskStore, WorkflowStore, Worker]:
        if self._parts is None:
            raise ServiceUnavailable("orchestration is not started", code="tasks_unavailable")
        return self._parts

    # -- clients ------------------------------------------------------------------------

    async def submit(self, new: NewWorkflow) -> WorkflowView:
        """Check, store and start a workflow; answered once stored (and its first steps
        queued, in the same transaction)."""
        _, store, worker = self._ready
        order = check_workflow(new, worker.task_types, self.config.max_workflow_steps)
        size = len(_json([step.input for step in new.steps]))
        if size > self.config.max_input_bytes:
            raise PayloadTooLarge(
                f"the steps' inputs take {size} bytes as JSON; at most "
                f"{self.config.max_input_bytes} (orchestration.max_input_bytes)",
                code="input_too_large",
                param="steps",
            )
        worker.bound.check()
        position = {step_id: n for n, step_id in enumerate(order)}
        rows = [
            {
                "id": uuid.uuid4().hex,
                "step_id": step.id,
                "position": position[step.id],
                "type": step.type,
                "input": _json(step.input),
                "depends_on": _json(step.depends_on),
                "timeout_s": -1.0 if step.timeout_s is None else step.timeout_s,
                "max_retries": -1 if step.max_retries is None else step.max_retries,
            }
            for step in new.steps
        ]
        workflow_id = uuid.uuid4().hex
        async with store.db.transaction() as tx:
            await store.insert(tx, workflow_id, new.failure_policy, new.max_parallel, rows)
            done = await self._advance(tx, workflow_id)
        worker.bound.added(done.started)
        self._tell(worker, done)
        return await self.get(workflow_id)

    async def get(self, workflow_id: str) -> WorkflowView:
        _, store, _ = self._ready
        row = await store.get(store.db, workflow_id)
        if row is None:
            raise NotFound(
                f"no workflow {workflow_id!r}", code="workflow_not_found", param="workflow_id"
            )
        steps = await store.steps(store.db, workflow_id)
        tasks = await store.tasks(store.db, workflow_id)
        finished = float(row["finished_at"])
        return WorkflowView(
            id=workflow_id,
            state=row["state"],
            failure_policy=row["failure_policy"],
            max_parallel=int(row["max_parallel"]),
            steps=[_step_view(step, tasks.get(str(step["id"]))) for step in steps],
            created_at=float(row["created_at"]),
            updated_at=float(row["updated_at"]),
            finished_at=finished or None,
        )

    async def find(self, *, state: str | None, limit: int) -> list[WorkflowView]:
        """The newest workflows first, with their steps."""
        _, store, _ = self._ready
        check_listing(limit, MAX_LIST, state, WORKFLOW_STATES)
        return [await self.get(i) for i in await store.newest(state or "", limit)]

    async def cancel(self, workflow_id: str) -> WorkflowView:
        """Cancel a running workflow: pending steps and the tasks of running ones."""
        _, store, worker = self._ready
        async with store.db.transaction() as tx:
            row = await store.lock(tx, workflow_id)
            if row is not None and await store.finish(tx, workflow_id, "cancelled"):
                done = await self._advance(tx, workflow_id)
            else:
                done = None
        if row is None:
            raise NotFound(
                f"no workflow {workflow_id!r}", code="workflow_not_found", param="workflow_id"
            )
        if done is None:
            raise Conflict(
                f"workflow {workflow_id!r} is {row['state']}: only a running one can be cancelled",
                code="workflow_finished",
            )
        self._tell(worker, done)
        return await self.get(workflow_id)

    async def retry_step(self, task_id: str, workflow_id: str) -> bool:
        """Queue the dead task of a step again, and its workflow with it: the step runs
        again, the steps skipped (or, under ``fail_fast``, cancelled before they
        started) behind it wait for it anew, and a workflow that failed runs again.
        409 when that cannot be: the workflow was cancelled, or ``fail_fast`` stopped
        steps mid-run (submit it again). ``False`` when the task is not dead."""
        tasks, store, worker = self._ready
        async with store.db.transaction() as tx:
            workflow = await store.lock(tx, workflow_id)
            if workflow is None:
                return await tasks.requeue_dead(task_id, runner=tx)
            steps = await store.steps(tx, workflow_id)
            started = await store.tasks(tx, workflow_id)
            stopped = [
                str(s["step_id"])
                for s in steps
                if s["state"] == "cancelled" and str(s["id"]) in started
            ]
            if workflow["state"] not in ("running", "failed") or stopped:
                why = f"steps {', '.join(stopped)} were stopped mid-run" if stopped else ""
                raise Conflict(
                    f"task {task_id!r} is a step of workflow {workflow_id!r}, which is "
                    f"{workflow['state']}{' and whose ' + why if why else ''}: submit the "
                    "workflow again",
                    code="workflow_finished",
                )
            if not await tasks.requeue_dead(task_id, runner=tx):
                return False
            await store.reopen(tx, workflow_id)
            await store.set_step(tx, task_id, "failed", "running")
            for step in steps:
                if step["state"] in ("skipped", "cancelled"):
                    await store.set_step(tx, str(step["id"]), str(step["state"]), "pending")
        worker.bound.added()
        worker.wake()
        worker.events.workflow(workflow_id)
        return True

    async def wait(self, workflow_id: str, timeout_s: float) -> WorkflowView:
        """The workflow once it ended, or as it is after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        pause = 0.01
        while True:
            view = await self.get(workflow_id)
            left = deadline - time.monotonic()
            if view.state != "running" or left <= 0:
                return view
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 0.25)

    async def current(self, workflow_id: str) -> WorkflowEvent:
        """The workflow's present state as an event (the first of its event stream)."""
        _, store, _ = self._ready
        event = await workflow_event(store, workflow_id, "current")
        if event is None:
            raise NotFound(
                f"no workflow {workflow_id!r}", code="workflow_not_found", param="workflow_id"
            )
        return event

    @property
    def broker(self) -> BrokerPort:
        return self._ready[2].broker

    # -- advancing ----------------------------------------------------------------------

    async def advance(self, workflow_id: str) -> None:
        _, store, worker = self._ready
        async with store.db.transaction() as tx:
            done = await self._advance(tx, workflow_id)
        self._tell(worker, done)

    async def catch_up(self, at_start: bool) -> None:
        """Advance the workflows left behind (at start: every running one)."""
        _, store, _ = self._ready
        for workflow_id in await (store.running() if at_start else store.behind()):
            try:
                await self.advance(workflow_id)
            except Exception as exc:
                log.warning("could not advance workflow %s: %s", workflow_id, exc)

    @staticmethod
    def _tell(worker: Worker, done: _Advance) -> None:
        for task_id in done.cancelled:
            worker.interrupt(task_id)
        if done.started:
            worker.wake()  # the scheduler publishes the new tasks
        worker.events.tasks(done.cancelled, "cancelled")
        worker.events.workflow(done.workflow_id)

    async def _advance(self, tx: SqlRunner, workflow_id: str) -> _Advance:
        tasks_store, store, worker = self._ready
        done = _Advance(workflow_id)
        workflow = await store.lock(tx, workflow_id)
        if workflow is None:
            return done
        steps = await store.steps(tx, workflow_id)
        tasks = await store.tasks(tx, workflow_id)
        for step in steps:
            task = tasks.get(str(step["id"]))
            if step["state"] == "running" and task is not None and task["state"] in FINISHED:
                outcome = _OUTCOME[str(task["state"])]
                if await store.set_step(tx, str(step["id"]), "running", outcome):
                    step["state"] = outcome
        if workflow["state"] != "running":
            await self._cancel_rest(tx, steps, done)
            return done
        by_id = {str(step["step_id"]): step for step in steps}
        policy, limit = str(workflow["failure_policy"]), int(workflow["max_parallel"])
        changed = True
        while changed:
            changed = False
            if policy == "fail_fast" and any(s["state"] in _NOT_SUCCEEDED for s in steps):
                await self._cancel_rest(tx, steps, done)
                await store.finish(tx, workflow_id, "failed")
                return done
            running = sum(1 for s in steps if s["state"] == "running")
            for step in steps:
                if step["state"] != "pending":
                    continue
                needs = [by_id[d] for d in msgspec.json.decode(str(step["depends_on"]))]
                if any(d["state"] in _NOT_SUCCEEDED for d in needs):
                    if await store.set_step(tx, str(step["id"]), "pending", "skipped"):
                        step["state"] = "skipped"
                        changed = True
                    continue
                if running >= limit or any(d["state"] != "succeeded" for d in needs):
                    continue
                outputs = _outputs(by_id, tasks)
                try:
                    value = resolve(msgspec.json.decode(str(step["input"])), outputs)
                except BrokenReference as exc:
                    error = TaskError(code="invalid_reference", message=str(exc))
                    if await store.set_step(tx, str(step["id"]), "pending", "failed", _json(error)):
                        step["state"] = "failed"
                        changed = True
                    continue
                if not await store.set_step(tx, str(step["id"]), "pending", "running"):
                    continue
                await self._start(tx, tasks_store, worker, workflow_id, step, value)
                step["state"] = "running"
                running += 1
                done.started += 1
        if all(s["state"] in _ENDED for s in steps):
            ok = all(s["state"] == "succeeded" for s in steps)
            await store.finish(tx, workflow_id, "succeeded" if ok else "failed")
        return done

    async def _start(
        self,
        tx: SqlRunner,
        tasks: TaskStore,
        worker: Worker,
        workflow_id: str,
        step: dict[str, Any],
        value: Any,
    ) -> None:
        task_type = worker.task_types.get(str(step["type"]))
        timeout_s, max_retries = float(step["timeout_s"]), int(step["max_retries"])
        if timeout_s < 0:
            timeout_s = task_type.timeout_s if task_type else 60.0
        if max_retries < 0:
            max_retries = task_type.max_retries if task_type else 0
        # Published by the scheduler once this transaction is committed (dispatched 0).
        await tasks.insert(
            task_id=str(step["id"]),
            type=str(step["type"]),
            input_json=_json(value),
            priority=0,
            run_at=time.time(),
            timeout_s=timeout_s,
            max_retries=max_retries,
            idempotent=task_type.idempotent if task_type else True,
            idempotency_key=None,
            dispatched_at=0.0,
            workflow_id=workflow_id,
            step_id=str(step["step_id"]),
            runner=tx,
        )

    async def _cancel_rest(
        self, tx: SqlRunner, steps: list[dict[str, Any]], done: _Advance
    ) -> None:
        tasks, store, _ = self._ready
        for step in steps:
            row_id = str(step["id"])
            if step["state"] == "pending":
                if await store.set_step(tx, row_id, "pending", "cancelled"):
                    step["state"] = "cancelled"
            elif step["state"] == "running":
                if await tasks.cancel(row_id, runner=tx):
                    done.cancelled.append(row_id)
                    outcome = "cancelled"
                else:  # it ended in the meantime: keep its outcome
                    task = await tx.fetch_one(f"SELECT state FROM {_TASKS} WHERE id = $1", row_id)
                    outcome = _OUTCOME.get(str(task["state"]) if task else "", "cancelled")
                if await store.set_step(tx, row_id, "running", outcome):
                    step["state"] = outcome


def _outputs(by_id: dict[str, dict[str, Any]], tasks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The outputs of the succeeded steps, by step id."""
    outputs: dict[str, Any] = {}
    for step_id, step in by_id.items():
        task = tasks.get(str(step["id"]))
        if step["state"] == "succeeded" and task is not None and task["output"]:
            outputs[step_id] = msgspec.json.decode(str(task["output"]))
        elif step["state"] == "succeeded":
            outputs[step_id] = None
    return outputs


def _step_view(step: dict[str, Any], task: dict[str, Any] | None) -> StepView:
    view = StepView(
        id=str(step["step_id"]),
        type=str(step["type"]),
        state=step["state"],
        depends_on=msgspec.json.decode(str(step["depends_on"])),
        input=msgspec.json.decode(str(step["input"])),
    )
    if step["error"]:
        view.error = _error.decode(str(step["error"]))
    if task is not None:
        view.task_id = str(task["id"])
        view.input = msgspec.json.decode(str(task["input"]))
        view.attempts = int(task["attempts"])
        if task["output"]:
            view.output = msgspec.json.decode(str(task["output"]))
        if task["error"]:
            view.error = _error.decode(str(task["error"]))
    return view
