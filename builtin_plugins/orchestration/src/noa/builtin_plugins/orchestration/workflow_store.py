"""The workflow and step tables. Every change is conditional on the state it leaves, and
an advancement first bumps its workflow's ``version`` so that advancements of one
workflow run one after the other (the row lock on PostgreSQL, the write lock on SQLite).
"""

from __future__ import annotations

import time
from typing import Any

from noa.builtin_plugins.orchestration.store import TABLE as TASKS
from noa.plugin_sdk.ports.storage import SqlRunner, StoragePort

__all__ = ["STEPS", "WORKFLOWS", "WorkflowStore"]

WORKFLOWS = "noa_orchestration_workflow"
STEPS = "noa_orchestration_step"


class WorkflowStore:
    __slots__ = ("db",)

    def __init__(self, db: StoragePort) -> None:
        self.db = db

    async def insert(
        self,
        tx: SqlRunner,
        workflow_id: str,
        failure_policy: str,
        max_parallel: int,
        steps: list[dict[str, Any]],
    ) -> None:
        now = time.time()
        await tx.execute(
            f"INSERT INTO {WORKFLOWS} (id, state, failure_policy, max_parallel, version, "
            "created_at, updated_at, finished_at) VALUES ($1, 'running', $2, $3, 0, $4, $4, 0)",
            workflow_id,
            failure_policy,
            max_parallel,
            now,
        )
        for step in steps:
            await tx.execute(
                f"INSERT INTO {STEPS} (id, workflow_id, step_id, position, type, input, "
                "depends_on, timeout_s, max_retries, state, error, updated_at) VALUES ($1, $2, "
                "$3, $4, $5, $6, $7, $8, $9, 'pending', '', $10)",
                step["id"],
                workflow_id,
                step["step_id"],
                step["position"],
                step["type"],
                step["input"],
                step["depends_on"],
                step["timeout_s"],
                step["max_retries"],
                now,
            )

    async def lock(self, tx: SqlRunner, workflow_id: str) -> dict[str, Any] | None:
        """The workflow's row, once this transaction is the only one advancing it."""
        changed = await tx.execute(
            f"UPDATE {WORKFLOWS} SET version = version + 1 WHERE id = $1", workflow_id
        )
        if changed != 1:
            return None
        return await tx.fetch_one(f"SELECT * FROM {WORKFLOWS} WHERE id = $1", workflow_id)

    async def get(self, runner: SqlRunner, workflow_id: str) -> dict[str, Any] | None:
        return await runner.fetch_one(f"SELECT * FROM {WORKFLOWS} WHERE id = $1", workflow_id)

    async def steps(self, runner: SqlRunner, workflow_id: str) -> list[dict[str, Any]]:
        return await runner.fetch(
            f"SELECT * FROM {STEPS} WHERE workflow_id = $1 ORDER BY position", workflow_id
        )

    async def tasks(self, runner: SqlRunner, workflow_id: str) -> dict[str, dict[str, Any]]:
        rows = await runner.fetch(f"SELECT * FROM {TASKS} WHERE workflow_id = $1", workflow_id)
        return {str(row["id"]): row for row in rows}

    async def set_step(
        self, tx: SqlRunner, row_id: str, before: str, after: str, error: str = ""
    ) -> bool:
        """``before`` -> ``after``; ``error`` (JSON text) is kept when given."""
        changed = await tx.execute(
            f"UPDATE {STEPS} SET state = $3, updated_at = $4"
            + (", error = $5" if error else "")
            + " WHERE id = $1 AND state = $2",
            row_id,
            before,
            after,
            time.time(),
            *((error,) if error else ()),
        )
        return changed == 1

    async def finish(self, tx: SqlRunner, workflow_id: str, state: str) -> bool:
        now = time.time()
        changed = await tx.execute(
            f"UPDATE {WORKFLOWS} SET state = $2, finished_at = $3, updated_at = $3 "
            "WHERE id = $1 AND state = 'running'",
            workflow_id,
            state,
            now,
        )
        return changed == 1

    async def reopen(self, tx: SqlRunner, workflow_id: str) -> None:
        """A failed workflow runs again (one of its failed steps is retried)."""
        await tx.execute(
            f"UPDATE {WORKFLOWS} SET state = 'running', finished_at = 0, updated_at = $2 "
            "WHERE id = $1 AND state = 'failed'",
            workflow_id,
            time.time(),
        )

    async def newest(self, state: str, limit: int) -> list[str]:
        rows = await self.db.fetch(
            f"SELECT id FROM {WORKFLOWS} WHERE ($1 = '' OR state = $1) "
            "ORDER BY created_at DESC, id LIMIT $2",
            state,
            limit,
        )
        return [str(row["id"]) for row in rows]

    async def running(self) -> list[str]:
        rows = await self.db.fetch(f"SELECT id FROM {WORKFLOWS} WHERE state = 'running'")
        return [str(row["id"]) for row in rows]

    async def behind(self) -> list[str]:
        """Workflows with a running step whose task ended (or is missing): the process
        that ended it died, or its advancement failed, before the workflow moved on."""
        rows = await self.db.fetch(
            f"SELECT DISTINCT s.workflow_id AS id FROM {STEPS} s LEFT JOIN {TASKS} t "
            "ON t.id = s.id WHERE s.state = 'running' AND (t.id IS NULL OR t.state IN "
            "('succeeded', 'cancelled', 'dead'))"
        )
        return [str(row["id"]) for row in rows]
