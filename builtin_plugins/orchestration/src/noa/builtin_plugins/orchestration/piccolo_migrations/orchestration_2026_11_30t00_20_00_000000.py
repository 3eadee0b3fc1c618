"""Adds cron schedules: one row per schedule, which the workers' scheduler turns into a
task at each fire time."""

from typing import Any

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns import Boolean, DoublePrecision, Integer, Text, Varchar

ID = "2026-11-30T00:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "Orchestration: cron schedules"

COLUMNS: list[tuple[str, Any, dict[str, Any]]] = [
    ("id", Varchar, {"length": 32, "primary_key": True}),
    ("cron", Varchar, {"length": 100, "default": ""}),
    ("timezone", Varchar, {"length": 64, "default": "UTC"}),
    ("type", Varchar, {"length": 100, "default": ""}),
    # JSON text.
    ("input", Text, {"default": "{}"}),
    ("priority", Integer, {"default": 0}),
    # -1: the task type's default at each fire.
    ("timeout_s", DoublePrecision, {"default": -1.0}),
    ("max_retries", Integer, {"default": -1}),
    ("paused", Boolean, {"default": False}),
    # Epoch seconds of the next fire time not yet turned into a task.
    ("next_run_at", DoublePrecision, {"default": 0.0, "index": True}),
    ("last_run_at", DoublePrecision, {"default": 0.0}),
    ("last_task_id", Varchar, {"length": 32, "default": ""}),
    ("created_at", DoublePrecision, {"default": 0.0}),
    ("updated_at", DoublePrecision, {"default": 0.0}),
]


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="orchestration", description=DESCRIPTION)
    manager.add_table(class_name="OrchestrationSchedule", tablename="noa_orchestration_schedule")
    for name, column, params in COLUMNS:
        manager.add_column(
            table_class_name="OrchestrationSchedule",
            tablename="noa_orchestration_schedule",
            column_name=name,
            column_class=column,
            params=params,
        )
    return manager
