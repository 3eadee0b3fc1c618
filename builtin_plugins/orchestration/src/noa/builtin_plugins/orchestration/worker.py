"""The worker of one process: takes task ids from the broker's work queue, claims each
task in the database, runs its handler with its timeout and writes the outcome.

Dispatch: a submission publishes the new task's id at once. Every ``poll_interval_s``
a scheduler loop renews this worker's leases, takes back tasks whose lease ran out (a
worker that died: at least once), and publishes the ids of queued tasks that became
due (scheduled, retrying, recovered, or published too long ago and still not taken).
The broker message is acknowledged once the task is claimed; from then on the lease,
not the broker, keeps the task alive. A duplicate delivery claims nothing.

Failures: a run that raises or times out is queued again after an exponential backoff
with jitter while retries are left, and goes ``dead`` after that (or at once for
``TaskFailed(retry=False)``, an input that no longer validates or an unknown type).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from noa.builtin_plugins.orchestration.bound import QueueBound
from noa.builtin_plugins.orchestration.config import OrchestrationConfig
from noa.builtin_plugins.orchestration.events import Events
from noa.builtin_plugins.orchestration.store import TaskStore
from noa.builtin_plugins.orchestration.values import TaskError
from noa.plugin_sdk.metrics import MetricsRegistry
from noa.plugin_sdk.ports.broker import BrokerPort, Message, Subscription
from noa.plugin_sdk.tasks import InvalidTaskInput, TaskFailed, TaskType

__all__ = ["Worker", "backoff_s"]

log = logging.getLogger("noa.orchestration")

DISPATCH_BATCH = 500
# A message waiting for a free slot longer than this is handed back to the broker
# (another process may be idle); the scheduler publishes it again if it gets lost.
CLAIM_WAIT_S = 60.0


def backoff_s(config: OrchestrationConfig, attempt: int) -> float:
    """The delay before the retry that follows failed attempt ``attempt`` (from 1):
    exponential, capped, half of it random so failed tasks don't retry in step."""
    ceiling = min(config.backoff_max_s, config.backoff_base_s * 2 ** min(attempt - 1, 60))
    return float(ceiling / 2 + random.uniform(0, ceiling / 2))


class _Context:
    """The :class:`~noa.plugin_sdk.tasks.TaskContext` of one run."""

    __slots__ = ("_store", "_worker", "attempt", "cancelled", "task_id")

    def __init__(self, store: TaskStore, worker: str, task_id: str, attempt: int) -> None:
        self._store = store
        self._worker = worker
        self.task_id = task_id
        self.attempt = attempt
        self.cancelled = False

    async def progress(self, fraction: float, message: str = "") -> None:
        fraction = min(1.0, max(0.0, float(fraction)))
        await self._store.progress(
            self.task_id, self._worker, self.attempt, fraction, message[:1000]
        )


class _Run:
    __slots__ = ("attempt", "context", "task")

    def __init__(self, task: asyncio.Task[None], context: _Context, attempt: int) -> None:
        self.task = task
        self.context = context
        self.attempt = attempt


class Worker:
    def __init__(
        self,
        config: OrchestrationConfig,
        store: TaskStore,
        broker: BrokerPort,
        task_types: dict[str, TaskType],
        metrics: MetricsRegistry,
    ) -> None:
        self.config = config
        self.store = store
        self.broker = broker
        self.task_types = task_types
        # Unique per process start: a restarted process never mistakes an old claim for its own.
        self.name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._slots = asyncio.Semaphore(config.concurrency)
        self._runs: dict[str, _Run] = {}
        self._consumer: Subscription | None = None
        self._loop: asyncio.Task[None] | None = None
        self._closing = False
        self._wake = asyncio.Event()
        self.bound = QueueBound(config)
        # Set by the workflows: called with a workflow id when one of its tasks ended
        # here, and on every scheduler poll (``True`` the first time, at start).
        self.on_finished: Callable[[str], Awaitable[None]] | None = None
        self.on_tick: Callable[[bool], Awaitable[None]] | None = None
        # Set by the schedules: called at every poll before due tasks are published.
        self.on_due: Callable[[], Awaitable[None]] | None = None
        # Progress events (set by the plugin once the broker is there; off until then).
        self.events = Events()
        self._depth = metrics.gauge(
            "orchestration_queue_depth",
            "Queued tasks in the database (each live worker reports the same count: use max)",
            ("worker",),
        ).labels(str(os.getpid()))
        self._outcomes = metrics.counter(
            "orchestration_tasks_total",
            "Task runs by type and outcome (succeeded, retried, dead, cancelled, interrupted)",
            ("type", "status"),
        )
        self._duration = metrics.histogram(
            "orchestration_task_duration_seconds", "Time a task's run took", ("type",)
        )

    async def start(self) -> None:
        self._consumer = await self.broker.consume(
            self.config.queue,
            self._on_message,
            max_deliveries=100,
            ack_timeout_s=CLAIM_WAIT_S + 30.0,
            concurrency=self.config.concurrency,
        )
        self._loop = asyncio.get_running_loop().create_task(self._schedule())

    def wake(self) -> None:
        """Run the scheduler now (a task became due or was re-queued)."""
        self._wake.set()

    async def publish(self, task_id: str) -> None:
        await self.broker.publish(self.config.queue, task_id.encode())

    # -- the scheduler ------------------------------------------------------------------

    async def _schedule(self) -> None:
        # In the background: startup (and `noa check`) never wait on the task table.
        recovered = False
        while not self._closing:
            try:
                at_start = not recovered
                if at_start:
                    await self.store.forget_dispatches()
                    recovered = True
                await self.tick()
                if self.on_tick is not None:
                    await self.on_tick(at_start)
            except Exception as exc:
                log.warning(
                    "orchestration scheduler: %s: %s (is the orchestration table migrated? "
                    "run `noa migrate apply`)",
                    type(exc).__name__,
                    exc,
                )
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.poll_interval_s)

    async def tick(self) -> None:
        store, config = self.store, self.config
        if self._runs:
            await store.renew_leases(self.name, config.lease_s)
            for task_id in await store.cancelled_of(self.name):
                self.interrupt(task_id)
        dead, queued = await store.take_back_expired(
            TaskError(code="interrupted", message="its worker stopped mid-run (lease expired)")
        )
        if dead or queued:
            log.warning(
                "took back %d task(s) whose worker stopped mid-run: %d queued again, %d dead",
                len(dead) + len(queued),
                len(queued),
                len(dead),
            )
            for row in dead:
                self._outcomes.labels(str(row["type"]), "dead").inc()
            for row in queued:
                self._outcomes.labels(str(row["type"]), "interrupted").inc()
            self.events.tasks([str(row["id"]) for row in dead], "dead")
            self.events.tasks([str(row["id"]) for row in queued], "released")
        if self.on_due is not None:
            await self.on_due()
        for row in await store.due(config.redispatch_after_s, DISPATCH_BATCH):
            task_id = str(row["id"])
            if await store.mark_dispatched(task_id, float(row["dispatched_at"])):
                await self.publish(task_id)
        queued = await store.count_queued()
        self._depth.set(queued)
        self.bound.counted(queued)

    # -- running ------------------------------------------------------------------------

    def interrupt(self, task_id: str) -> None:
        """Stop this process's run of a cancelled task."""
        run = self._runs.get(task_id)
        if run is not None and not run.task.done():
            run.context.cancelled = True
            run.task.cancel()

    async def _on_message(self, message: Message) -> None:
        task_id = message.payload.decode(errors="replace")
        if self._closing:
            raise RuntimeError("worker shutting down")  # back to the broker, for another
        await asyncio.wait_for(self._slots.acquire(), CLAIM_WAIT_S)
        try:
            row = await self.store.claim(
                task_id, self.name, self.config.lease_s, list(self.task_types)
            )
        except BaseException:
            self._slots.release()
            raise
        if row is None:
            self._slots.release()
            return
        attempt = int(row["attempts"])
        self.events.task(row, "started")
        context = _Context(self.store, self.name, task_id, attempt)
        task = asyncio.get_running_loop().create_task(self._run(row, context))
        self._runs[task_id] = _Run(task, context, attempt)
        task.add_done_callback(lambda _: self._done(task_id))

    def _done(self, task_id: str) -> None:
        self._runs.pop(task_id, None)
        self._slots.release()

    async def _run(self, row: dict[str, Any], context: _Context) -> None:
        task_id, type_name, attempt = context.task_id, str(row["type"]), context.attempt
        started = time.monotonic()
        try:
            task_type = self.task_types.get(type_name)
            if task_type is None:
                raise TaskFailed(
                    f"no task type {type_name!r} is registered on this worker",
                    code="unknown_task_type",
                    retry=False,
                )
            try:
                value = task_type.parse_input(msgspec.json.decode(str(row["input"])))
            except InvalidTaskInput as exc:
                raise TaskFailed(str(exc), code="invalid_input", retry=False) from None
            try:
                result = await asyncio.wait_for(
                    task_type.handler(context, value), float(row["timeout_s"])
                )
            except TimeoutError:
                raise TaskFailed(
                    f"the run took longer than its timeout of {float(row['timeout_s']):g} s",
                    code="timeout",
                ) from None
            try:
                output = msgspec.json.encode(result).decode()
            except (TypeError, msgspec.EncodeError) as exc:
                raise TaskFailed(
                    f"the handler returned what JSON can't hold: {exc}",
                    code="invalid_output",
                    retry=False,
                ) from None
        except asyncio.CancelledError:
            await self._interrupted(task_id, type_name, context, bool(row["idempotent"]))
            return
        except Exception as exc:
            self._duration.labels(type_name).observe(time.monotonic() - started)
            await self._failed(row, context, exc)
            return
        self._duration.labels(type_name).observe(time.monotonic() - started)
        if await self.store.succeed(task_id, self.name, attempt, output):
            self._outcomes.labels(type_name, "succeeded").inc()
            self.events.task(row, "succeeded")
            await self._ended(row)

    async def _ended(self, row: dict[str, Any]) -> None:
        """Tell the workflow of a task that ended here (a failure is caught up with at
        a later poll)."""
        workflow_id = str(row.get("workflow_id") or "")
        if workflow_id and self.on_finished is not None:
            try:
                await self.on_finished(workflow_id)
            except Exception as exc:
                log.warning("could not advance workflow %s: %s", workflow_id, exc)

    async def _failed(self, row: dict[str, Any], context: _Context, exc: Exception) -> None:
        task_id, type_name, attempt = context.task_id, str(row["type"]), context.attempt
        if isinstance(exc, TaskFailed):
            error = TaskError(code=exc.code, message=exc.message, attempt=attempt)
            retry = exc.retry
        else:
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            error = TaskError(code="handler_error", message=message[:4000], attempt=attempt)
            retry = True
        retry_at = None
        if retry and attempt <= int(row["max_retries"]):
            retry_at = time.time() + backoff_s(self.config, attempt)
        if await self.store.fail(task_id, self.name, attempt, error, retry_at):
            self._outcomes.labels(type_name, "dead" if retry_at is None else "retried").inc()
            self.events.task(
                row, "dead" if retry_at is None else "retried", error=error, run_at=retry_at
            )
            if retry_at is None:
                await self._ended(row)
            log.info(
                "task %s (%s) attempt %d failed (%s); %s",
                task_id,
                type_name,
                attempt,
                error.code,
                "dead" if retry_at is None else f"retry in {retry_at - time.time():.2f} s",
            )

    async def _interrupted(
        self, task_id: str, type_name: str, context: _Context, idempotent: bool
    ) -> None:
        # Cancelled by a client (the row says so already) or by shutdown: give it back,
        # unless its type is not idempotent (running it again might apply it twice).
        # Shielded: these writes must land even though this task is being cancelled.
        if context.cancelled:
            await asyncio.shield(self.store.drop_lease(task_id, self.name))
            self._outcomes.labels(type_name, "cancelled").inc()
            return
        if not idempotent:
            error = TaskError(
                code="interrupted",
                message="the server shut down mid-run and the task's type is not "
                "idempotent, so it is not run again; re-queue it if that is safe",
                attempt=context.attempt,
            )
            if await asyncio.shield(
                self.store.fail(task_id, self.name, context.attempt, error, None)
            ):
                self.events.tasks((task_id,), "dead")
                self._outcomes.labels(type_name, "dead").inc()
            return
        await asyncio.shield(self.store.release(task_id, self.name, context.attempt))
        self.events.tasks((task_id,), "released")
        self._outcomes.labels(type_name, "interrupted").inc()

    # -- stopping -----------------------------------------------------------------------

    async def close(self) -> None:
        """Stop taking work, give running tasks ``shutdown_grace_s`` to finish, then
        interrupt the rest and hand them back to the queue."""
        self._closing = True
        if self._consumer is not None:
            await self._consumer.unsubscribe()
            self._consumer = None
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
            self._loop = None
        running = [run.task for run in self._runs.values()]
        if running:
            await asyncio.wait(running, timeout=self.config.shutdown_grace_s)
        left = [run.task for run in self._runs.values() if not run.task.done()]
        for task in left:
            task.cancel()
        if left:
            await asyncio.gather(*left, return_exceptions=True)
            log.info("gave %d interrupted task(s) back to the queue", len(left))
