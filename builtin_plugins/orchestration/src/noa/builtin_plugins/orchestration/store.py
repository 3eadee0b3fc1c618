"""The task table: every state change is one conditional statement, so the database
stays the truth when workers race or a message is delivered twice.

A worker *claims* a task by moving it from ``queued`` to ``running`` under its own
name with a lease; only the worker holding that claim (same worker, same attempt) may
write the run's result, so a late or duplicate run changes nothing. Leases are renewed
while a task runs; a task whose lease ran out is taken back.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec
from noa.builtin_plugins.orchestration.values import TaskError, TaskView
from noa.plugin_sdk.errors import Conflict
from noa.plugin_sdk.ports.storage import SqlRunner, StoragePort

__all__ = ["TABLE", "TaskStore"]

TABLE = "noa_orchestration_task"

_error = msgspec.json.Decoder(TaskError)

_COLUMNS = (
    "id", "type", "state", "priority", "input", "output", "error", "attempts", "max_retries",
    "timeout_s", "idempotent", "run_at", "idempotency_key", "worker", "lease_until",
    "dispatched_at", "progress", "progress_message", "created_at", "updated_at", "started_at",
    "finished_at", "workflow_id", "step_id",
)  # fmt: skip
_INSERT = (
    f"INSERT INTO {TABLE} ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join(f'${n}' for n in range(1, len(_COLUMNS) + 1))})"
)


def _text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def view_of(row: dict[str, Any]) -> TaskView:
    output, error = str(row["output"]), str(row["error"])
    started, finished = float(row["started_at"]), float(row["finished_at"])
    return TaskView(
        id=str(row["id"]),
        type=str(row["type"]),
        state=row["state"],
        priority=int(row["priority"]),
        input=msgspec.json.decode(str(row["input"])),
        output=msgspec.json.decode(output) if output else None,
        error=_error.decode(error) if error else None,
        attempts=int(row["attempts"]),
        max_retries=int(row["max_retries"]),
        timeout_s=float(row["timeout_s"]),
        run_at=float(row["run_at"]),
        idempotency_key=row["idempotency_key"],
        progress=float(row["progress"]),
        progress_message=str(row["progress_message"]),
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
        started_at=started or None,
        finished_at=finished or None,
        workflow_id=str(row["workflow_id"]) or None,
        step_id=str(row["step_id"]) or None,
    )


class TaskStore:
    __slots__ = ("db",)

    def __init__(self, db: StoragePort) -> None:
        self.db = db

    # -- submitting and reading ---------------------------------------------------------

    async def insert(
        self,
        *,
        task_id: str,
        type: str,
        input_json: str,
        priority: int,
        run_at: float,
        timeout_s: float,
        max_retries: int,
        idempotent: bool,
        idempotency_key: str | None,
        dispatched_at: float,
        workflow_id: str = "",
        step_id: str = "",
        runner: SqlRunner | None = None,
    ) -> dict[str, Any] | None:
        """Store a new queued task and return its row (as it was stored, without
        reading it back); ``None`` when its idempotency key is taken. ``runner``: an open
        transaction to store it in (a workflow starting a step)."""
        now = time.time()
        row: dict[str, Any] = {
            "id": task_id,
            "type": type,
            "state": "queued",
            "priority": priority,
            "input": input_json,
            "output": "",
            "error": "",
            "attempts": 0,
            "max_retries": max_retries,
            "timeout_s": timeout_s,
            "idempotent": idempotent,
            "run_at": run_at,
            "idempotency_key": idempotency_key,
            "worker": "",
            "lease_until": 0.0,
            "dispatched_at": dispatched_at,
            "progress": 0.0,
            "progress_message": "",
            "created_at": now,
            "updated_at": now,
            "started_at": 0.0,
            "finished_at": 0.0,
            "workflow_id": workflow_id,
            "step_id": step_id,
        }
        try:
            await (runner or self.db).execute(_INSERT, *(row[name] for name in _COLUMNS))
        except Conflict:
            if idempotency_key is None:
                raise
            return None
        return row

    async def get(self, task_id: str) -> dict[str, Any] | None:
        return await self.db.fetch_one(f"SELECT * FROM {TABLE} WHERE id = $1", task_id)

    async def by_idempotency_key(self, key: str) -> dict[str, Any] | None:
        return await self.db.fetch_one(f"SELECT * FROM {TABLE} WHERE idempotency_key = $1", key)

    async def find(self, *, state: str | None, type: str | None, limit: int) -> list[TaskView]:
        rows = await self.db.fetch(
            f"SELECT * FROM {TABLE} WHERE ($1 = '' OR state = $1) AND ($2 = '' OR type = $2) "
            "ORDER BY created_at DESC, id LIMIT $3",
            state or "",
            type or "",
            limit,
        )
        return [view_of(row) for row in rows]

    async def count_queued(self) -> int:
        row = await self.db.fetch_one(f"SELECT COUNT(*) AS n FROM {TABLE} WHERE state = 'queued'")
        return int(row["n"]) if row else 0

    # -- clients changing a task --------------------------------------------------------

    async def cancel(self, task_id: str, runner: SqlRunner | None = None) -> bool:
        """Queued or running -> cancelled. The worker of a running one sees it at its
        next poll (or at once in this process) and stops the handler."""
        now = time.time()
        changed = await (runner or self.db).execute(
            f"UPDATE {TABLE} SET state = 'cancelled', finished_at = $2, updated_at = $2 "
            "WHERE id = $1 AND state IN ('queued', 'running')",
            task_id,
            now,
        )
        return changed == 1

    async def requeue_dead(self, task_id: str, runner: SqlRunner | None = None) -> bool:
        """Dead -> queued with its attempts reset (the last error is kept)."""
        now = time.time()
        changed = await (runner or self.db).execute(
            f"UPDATE {TABLE} SET state = 'queued', attempts = 0, run_at = $2, worker = '', "
            "lease_until = 0, dispatched_at = 0, finished_at = 0, updated_at = $2 "
            "WHERE id = $1 AND state = 'dead'",
            task_id,
            now,
        )
        return changed == 1

    # -- workers ------------------------------------------------------------------------

    async def claim(
        self, task_id: str, worker: str, lease_s: float, types: Sequence[str]
    ) -> dict[str, Any] | None:
        """Queued and due -> running for ``worker``; the row, or ``None`` when another
        delivery, a cancel or a schedule got there first, or when the task's type is not
        among ``types`` (the worker lacks its plugin: the task stays queued for one that
        has it, and is published again after ``redispatch_after_s``)."""
        if not types:
            return None
        now = time.time()
        marks = ", ".join(f"${n}" for n in range(5, 5 + len(types)))
        row = await self.db.fetch_one(
            f"UPDATE {TABLE} SET state = 'running', attempts = attempts + 1, worker = $2, "
            "lease_until = $3, started_at = $4, updated_at = $4, progress = 0, "
            "progress_message = '' WHERE id = $1 AND state = 'queued' AND run_at <= $4 "
            f"AND type IN ({marks}) RETURNING *",
            task_id,
            worker,
            now + lease_s,
            now,
            *types,
        )
        return row

    async def succeed(self, task_id: str, worker: str, attempt: int, output_json: str) -> bool:
        now = time.time()
        changed = await self.db.execute(
            f"UPDATE {TABLE} SET state = 'succeeded', output = $4, worker = '', lease_until = 0, "
            "progress = 1, finished_at = $5, updated_at = $5 "
            "WHERE id = $1 AND state = 'running' AND worker = $2 AND attempts = $3",
            task_id,
            worker,
            attempt,
            output_json,
            now,
        )
        return changed == 1

    async def fail(
        self, task_id: str, worker: str, attempt: int, error: TaskError, retry_at: float | None
    ) -> bool:
        """Record a failed run: queued again at ``retry_at``, or dead when it is ``None``."""
        now = time.time()
        if retry_at is None:
            sql = (
                f"UPDATE {TABLE} SET state = 'dead', error = $4, worker = '', lease_until = 0, "
                "finished_at = $5, updated_at = $5 "
                "WHERE id = $1 AND state = 'running' AND worker = $2 AND attempts = $3"
            )
            params: tuple[Any, ...] = (task_id, worker, attempt, _text(error), now)
        else:
            sql = (
                f"UPDATE {TABLE} SET state = 'queued', error = $4, worker = '', lease_until = 0, "
                "run_at = $6, dispatched_at = 0, updated_at = $5 "
                "WHERE id = $1 AND state = 'running' AND worker = $2 AND attempts = $3"
            )
            params = (task_id, worker, attempt, _text(error), now, retry_at)
        return await self.db.execute(sql, *params) == 1

    async def release(self, task_id: str, worker: str, attempt: int) -> bool:
        """Give a run interrupted by shutdown back to the queue, its attempt not counted."""
        now = time.time()
        changed = await self.db.execute(
            f"UPDATE {TABLE} SET state = 'queued', attempts = attempts - 1, worker = '', "
            "lease_until = 0, run_at = $4, dispatched_at = 0, updated_at = $4 "
            "WHERE id = $1 AND state = 'running' AND worker = $2 AND attempts = $3",
            task_id,
            worker,
            attempt,
            now,
        )
        return changed == 1

    async def drop_lease(self, task_id: str, worker: str) -> None:
        """A cancelled task's worker stopped it: clear the claim."""
        await self.db.execute(
            f"UPDATE {TABLE} SET worker = '', lease_until = 0 WHERE id = $1 AND worker = $2",
            task_id,
            worker,
        )

    async def progress(
        self, task_id: str, worker: str, attempt: int, fraction: float, message: str
    ) -> None:
        await self.db.execute(
            f"UPDATE {TABLE} SET progress = $4, progress_message = $5, updated_at = $6 "
            "WHERE id = $1 AND state = 'running' AND worker = $2 AND attempts = $3",
            task_id,
            worker,
            attempt,
            fraction,
            message,
            time.time(),
        )

    async def renew_leases(self, worker: str, lease_s: float) -> None:
        await self.db.execute(
            f"UPDATE {TABLE} SET lease_until = $2 WHERE worker = $1 AND state = 'running'",
            worker,
            time.time() + lease_s,
        )

    async def cancelled_of(self, worker: str) -> list[str]:
        """Ids of tasks cancelled while ``worker`` still runs them."""
        rows = await self.db.fetch(
            f"SELECT id FROM {TABLE} WHERE worker = $1 AND state = 'cancelled'", worker
        )
        return [str(r["id"]) for r in rows]

    async def take_back_expired(
        self, max_attempts_error: TaskError
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Running tasks whose lease ran out (their worker died): an idempotent one with
        retries left is queued again at once; the others go dead, as running them again
        might apply their effect twice or they keep killing their worker. The ids and
        types of those gone dead and of those queued again."""
        now = time.time()
        async with self.db.transaction() as tx:
            dead = await tx.fetch(
                f"UPDATE {TABLE} SET state = 'dead', error = $2, worker = '', lease_until = 0, "
                "finished_at = $1, updated_at = $1 WHERE state = 'running' AND lease_until < $1 "
                "AND (idempotent = FALSE OR attempts > max_retries) RETURNING id, type",
                now,
                _text(max_attempts_error),
            )
            queued = await tx.fetch(
                f"UPDATE {TABLE} SET state = 'queued', worker = '', lease_until = 0, "
                "run_at = $1, dispatched_at = 0, updated_at = $1 "
                "WHERE state = 'running' AND lease_until < $1 RETURNING id, type",
                now,
            )
        return dead, queued

    async def due(self, redispatch_after_s: float, limit: int) -> list[dict[str, Any]]:
        """Queued tasks that are due and not published recently, by priority."""
        now = time.time()
        return await self.db.fetch(
            f"SELECT id, dispatched_at FROM {TABLE} WHERE state = 'queued' AND run_at <= $1 "
            "AND dispatched_at <= $2 ORDER BY priority DESC, run_at, id LIMIT $3",
            now,
            now - redispatch_after_s,
            limit,
        )

    async def mark_dispatched(self, task_id: str, seen: float) -> bool:
        """Claim the publishing of a due task (one worker publishes it, not each)."""
        changed = await self.db.execute(
            f"UPDATE {TABLE} SET dispatched_at = $3 WHERE id = $1 AND state = 'queued' "
            "AND dispatched_at = $2",
            task_id,
            seen,
            time.time(),
        )
        return changed == 1

    async def forget_dispatches(self) -> None:
        """At start: a queued task may have been lost with a broker's memory; publish
        every one again (a duplicate delivery claims nothing)."""
        await self.db.execute(
            f"UPDATE {TABLE} SET dispatched_at = 0 WHERE state = 'queued' AND dispatched_at > 0"
        )
