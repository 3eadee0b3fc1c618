"""Adds workflows: one row per workflow and one per step; each started step's task row
(whose id is the step row's id) names its workflow and step."""

from typing import Any

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns import DoublePrecision, Integer, Text, Varchar

ID = "2026-11-29T21:50:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "Orchestration: workflows"

WORKFLOW_COLUMNS: list[tuple[str, Any, dict[str, Any]]] = [
    ("id", Varchar, {"length": 32, "primary_key": True}),
    # running, succeeded, failed, cancelled
    ("state", Varchar, {"length": 16, "default": "running", "index": True}),
    ("failure_policy", Varchar, {"length": 16, "default": "fail_fast"}),
    ("max_parallel", Integer, {"default": 4}),
    # Bumped by every advancement: its UPDATE serialises advancements of one workflow.
    ("version", Integer, {"default": 0}),
    ("created_at", DoublePrecision, {"default": 0.0}),
    ("updated_at", DoublePrecision, {"default": 0.0}),
    ("finished_at", DoublePrecision, {"default": 0.0}),
]

STEP_COLUMNS: list[tuple[str, Any, dict[str, Any]]] = [
    # Also the id of the step's task once it is started.
    ("id", Varchar, {"length": 32, "primary_key": True}),
    ("workflow_id", Varchar, {"length": 32, "index": True}),
    ("step_id", Varchar, {"length": 64, "default": ""}),
    ("position", Integer, {"default": 0}),
    ("type", Varchar, {"length": 100, "default": ""}),
    # JSON text: the input as submitted (references unresolved), the step ids it needs.
    ("input", Text, {"default": "{}"}),
    ("depends_on", Text, {"default": "[]"}),
    # -1: the task type's default.
    ("timeout_s", DoublePrecision, {"default": -1.0}),
    ("max_retries", Integer, {"default": -1}),
    # pending, running, succeeded, failed, skipped, cancelled
    ("state", Varchar, {"length": 16, "default": "pending", "index": True}),
    # JSON text of a failure that happened without a task (a broken reference).
    ("error", Text, {"default": ""}),
    ("updated_at", DoublePrecision, {"default": 0.0}),
]

TASK_COLUMNS: list[tuple[str, Any, dict[str, Any]]] = [
    ("workflow_id", Varchar, {"length": 32, "default": "", "index": True}),
    ("step_id", Varchar, {"length": 64, "default": ""}),
]


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="orchestration", description=DESCRIPTION)
    tables = (
        ("OrchestrationWorkflow", "noa_orchestration_workflow", WORKFLOW_COLUMNS),
        ("OrchestrationStep", "noa_orchestration_step", STEP_COLUMNS),
    )
    for class_name, table, columns in tables:
        manager.add_table(class_name=class_name, tablename=table)
        for name, column, params in columns:
            manager.add_column(
                table_class_name=class_name,
                tablename=table,
                column_name=name,
                column_class=column,
                params=params,
            )
    for name, column, params in TASK_COLUMNS:
        manager.add_column(
            table_class_name="OrchestrationTask",
            tablename="noa_orchestration_task",
            column_name=name,
            column_class=column,
            params=params,
        )
    return manager
