"""Cron schedules: a task of one type and input at every time a cron expression names.

A schedule row keeps ``next_run_at``, the next fire time not yet turned into a task. At
every poll each worker fires the schedules that are due: in one transaction it moves
``next_run_at`` on (conditional on the value it read, so one process fires each time)
and stores the task, with the idempotency key ``schedule:<id>:<fire epoch>``; the
task is then dispatched like any other. A crash between the two loses nothing, as both
happen or neither. Fire times missed while no server ran are not caught up one by one:
the schedule fires once, then at its next time after now.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from cronsim import CronSim, CronSimError
from noa.builtin_plugins.orchestration.service import Tasks
from noa.builtin_plugins.orchestration.store import TaskStore
from noa.builtin_plugins.orchestration.values import NewSchedule, ScheduleView, check_listing
from noa.builtin_plugins.orchestration.worker import Worker
from noa.plugin_sdk.errors import NotFound, ServiceUnavailable, Unprocessable
from noa.plugin_sdk.ports.storage import StoragePort

__all__ = ["TABLE", "Schedules", "next_fire"]

log = logging.getLogger("noa.orchestration")

TABLE = "noa_orchestration_schedule"
MAX_LIST = 1000
# Schedules fired per poll and process (the rest at the next poll).
FIRE_BATCH = 100


def next_fire(cron: str, timezone: str, after: float) -> float:
    """The first time after ``after`` (epoch seconds) that ``cron`` names in ``timezone``."""
    start = dt.datetime.fromtimestamp(after, ZoneInfo(timezone))
    return next(CronSim(cron, start)).timestamp()


def _checked_timing(cron: str, timezone: str) -> float:
    try:
        zone_ok = ZoneInfo(timezone) is not None
    except (ZoneInfoNotFoundError, ValueError):
        zone_ok = False
    if not zone_ok:
        raise Unprocessable(
            f"unknown time zone {timezone!r}: give an IANA name such as 'UTC' or 'Europe/Berlin'",
            code="invalid_timezone",
            param="timezone",
        )
    try:
        if len(cron.split()) != 5:  # cronsim also takes a sixth field, of seconds
            raise CronSimError("Wrong number of fields")
        return next_fire(cron, timezone, time.time())
    except (CronSimError, StopIteration) as exc:
        raise Unprocessable(
            f"invalid cron expression {cron!r}: {exc or 'it names no time'} (five fields: "
            "minute hour day-of-month month day-of-week, e.g. '*/15 * * * *')",
            code="invalid_cron",
            param="cron",
        ) from None


def _view(row: dict[str, Any]) -> ScheduleView:
    timeout_s, max_retries = float(row["timeout_s"]), int(row["max_retries"])
    last_run_at = float(row["last_run_at"])
    return ScheduleView(
        id=str(row["id"]),
        cron=str(row["cron"]),
        timezone=str(row["timezone"]),
        type=str(row["type"]),
        input=msgspec.json.decode(str(row["input"])),
        priority=int(row["priority"]),
        timeout_s=None if timeout_s < 0 else timeout_s,
        max_retries=None if max_retries < 0 else max_retries,
        paused=bool(row["paused"]),
        next_run_at=float(row["next_run_at"]),
        last_run_at=last_run_at or None,
        last_task_id=str(row["last_task_id"]) or None,
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
    )


class Schedules:
    def __init__(self, tasks: Tasks) -> None:
        self.tasks = tasks
        self._parts: tuple[StoragePort, TaskStore, Worker] | None = None

    def start(self, db: StoragePort, task_store: TaskStore, worker: Worker) -> None:
        self._parts = (db, task_store, worker)
        worker.on_due = self.fire

    @property
    def _ready(self) -> tuple[StoragePort, TaskStore, Worker]:
        if self._parts is None:
            raise ServiceUnavailable("orchestration is not started", code="tasks_unavailable")
        return self._parts

    # -- clients ------------------------------------------------------------------------

    async def create(self, new: NewSchedule) -> ScheduleView:
        db, _, _ = self._ready
        next_run_at = _checked_timing(new.cron, new.timezone)
        _, input_json, _ = self.tasks.checked(new.type, new.input, new.timeout_s)
        schedule_id, now = uuid.uuid4().hex, time.time()
        await db.execute(
            f"INSERT INTO {TABLE} (id, cron, timezone, type, input, priority, timeout_s, "
            "max_retries, paused, next_run_at, last_run_at, last_task_id, created_at, "
            "updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, FALSE, $9, 0, '', $10, $10)",
            schedule_id,
            new.cron,
            new.timezone,
            new.type,
            input_json,
            new.priority,
            -1.0 if new.timeout_s is None else new.timeout_s,
            -1 if new.max_retries is None else new.max_retries,
            next_run_at,
            now,
        )
        return await self.get(schedule_id)

    async def get(self, schedule_id: str) -> ScheduleView:
        db, _, _ = self._ready
        row = await db.fetch_one(f"SELECT * FROM {TABLE} WHERE id = $1", schedule_id)
        if row is None:
            raise NotFound(
                f"no schedule {schedule_id!r}", code="schedule_not_found", param="schedule_id"
            )
        return _view(row)

    async def find(self, limit: int) -> list[ScheduleView]:
        db, _, _ = self._ready
        check_listing(limit, MAX_LIST)
        rows = await db.fetch(f"SELECT * FROM {TABLE} ORDER BY created_at DESC, id LIMIT $1", limit)
        return [_view(row) for row in rows]

    async def delete(self, schedule_id: str) -> ScheduleView:
        """Remove a schedule (tasks it already made stay)."""
        db, _, _ = self._ready
        view = await self.get(schedule_id)
        await db.execute(f"DELETE FROM {TABLE} WHERE id = $1", schedule_id)
        return view

    async def pause(self, schedule_id: str, paused: bool) -> ScheduleView:
        """Pause or resume. Resuming fires next at the first time after now, not for
        the times that passed while paused."""
        db, _, _ = self._ready
        view = await self.get(schedule_id)
        now = time.time()
        next_run_at = view.next_run_at
        if not paused and view.paused:
            next_run_at = next_fire(view.cron, view.timezone, now)
        await db.execute(
            f"UPDATE {TABLE} SET paused = $2, next_run_at = $3, updated_at = $4 WHERE id = $1",
            schedule_id,
            paused,
            next_run_at,
            now,
        )
        return await self.get(schedule_id)

    # -- the scheduler ------------------------------------------------------------------

    async def fire(self) -> None:
        """Turn every due schedule's fire time into a task (called at every poll)."""
        db, task_store, worker = self._ready
        now = time.time()
        rows = await db.fetch(
            f"SELECT * FROM {TABLE} WHERE paused = FALSE AND next_run_at <= $1 "
            "ORDER BY next_run_at LIMIT $2",
            now,
            FIRE_BATCH,
        )
        for row in rows:
            try:
                await self._fire(db, task_store, worker, row, now)
            except Exception as exc:
                log.warning(
                    "schedule %s could not fire: %s: %s", row["id"], type(exc).__name__, exc
                )

    async def _fire(
        self,
        db: StoragePort,
        task_store: TaskStore,
        worker: Worker,
        row: dict[str, Any],
        now: float,
    ) -> None:
        schedule_id, fired_at = str(row["id"]), float(row["next_run_at"])
        following = next_fire(str(row["cron"]), str(row["timezone"]), max(now, fired_at))
        task_type = worker.task_types.get(str(row["type"]))
        timeout_s, max_retries = float(row["timeout_s"]), int(row["max_retries"])
        if timeout_s < 0:
            timeout_s = task_type.timeout_s if task_type else 60.0
        if max_retries < 0:
            max_retries = task_type.max_retries if task_type else 0
        task_id = uuid.uuid4().hex
        async with db.transaction() as tx:
            moved = await tx.execute(
                f"UPDATE {TABLE} SET next_run_at = $3, last_run_at = $2, last_task_id = $4, "
                "updated_at = $5 WHERE id = $1 AND next_run_at = $2 AND paused = FALSE",
                schedule_id,
                fired_at,
                following,
                task_id,
                now,
            )
            if moved != 1:
                return  # another process fired it, or it was paused or deleted
            created = await task_store.insert(
                task_id=task_id,
                type=str(row["type"]),
                input_json=str(row["input"]),
                priority=int(row["priority"]),
                run_at=fired_at,
                timeout_s=timeout_s,
                max_retries=max_retries,
                idempotent=task_type.idempotent if task_type else True,
                idempotency_key=f"schedule:{schedule_id}:{fired_at:.0f}",
                dispatched_at=0.0,  # published by this poll's dispatch, once committed
                runner=tx,
            )
        if created is not None:
            worker.bound.added()
            worker.events.task(created, "queued")
