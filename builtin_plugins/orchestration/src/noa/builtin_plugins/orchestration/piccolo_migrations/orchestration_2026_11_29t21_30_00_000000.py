"""Creates the task table: one row per task, the truth about its state; the broker only
carries task ids to workers."""

from typing import Any

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns import Boolean, DoublePrecision, Integer, Text, Varchar

ID = "2026-11-29T21:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "Orchestration: durable tasks"

COLUMNS: list[tuple[str, Any, dict[str, Any]]] = [
    ("id", Varchar, {"length": 32, "primary_key": True}),
    ("type", Varchar, {"length": 100, "index": True}),
    # queued, running, succeeded, cancelled, dead
    ("state", Varchar, {"length": 16, "default": "queued", "index": True}),
    ("priority", Integer, {"default": 0}),
    # JSON text; output and error stay empty until a run writes them.
    ("input", Text, {"default": "{}"}),
    ("output", Text, {"default": ""}),
    ("error", Text, {"default": ""}),
    ("attempts", Integer, {"default": 0}),
    ("max_retries", Integer, {"default": 0}),
    ("timeout_s", DoublePrecision, {"default": 60.0}),
    ("idempotent", Boolean, {"default": True}),
    ("run_at", DoublePrecision, {"default": 0.0, "index": True}),
    ("idempotency_key", Varchar, {"length": 200, "null": True, "unique": True, "default": None}),
    # The worker running it and until when its lease holds (renewed while it runs).
    ("worker", Varchar, {"length": 64, "default": ""}),
    ("lease_until", DoublePrecision, {"default": 0.0}),
    # When its id was last published to the work queue (0: not since it became queued).
    ("dispatched_at", DoublePrecision, {"default": 0.0}),
    ("progress", DoublePrecision, {"default": 0.0}),
    ("progress_message", Text, {"default": ""}),
    ("created_at", DoublePrecision, {"default": 0.0}),
    ("updated_at", DoublePrecision, {"default": 0.0}),
    ("started_at", DoublePrecision, {"default": 0.0}),
    ("finished_at", DoublePrecision, {"default": 0.0}),
]


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="orchestration", description=DESCRIPTION)
    manager.add_table(class_name="OrchestrationTask", tablename="noa_orchestration_task")
    for name, column, params in COLUMNS:
        manager.add_column(
            table_class_name="OrchestrationTask",
            tablename="noa_orchestration_task",
            column_name=name,
            column_class=column,
            params=params,
        )
    return manager
