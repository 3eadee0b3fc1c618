"""Creates noa_audit_event."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns import JSON, DoublePrecision, Varchar

ID = "2026-11-23T15:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "audit events table"

TABLE = "noa_audit_event"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="audit", description=DESCRIPTION)
    manager.add_table(class_name="AuditEvent", tablename=TABLE)
    for name, column, params in (
        ("event_id", Varchar, {"length": 64, "unique": True}),
        ("at", DoublePrecision, {"default": 0.0}),
        ("actor", Varchar, {"length": 200}),
        ("action", Varchar, {"length": 200}),
        ("resource", Varchar, {"length": 400}),
        ("outcome", Varchar, {"length": 20}),
        ("request_id", Varchar, {"length": 128, "null": True, "default": None}),
        ("detail", JSON, {"default": "{}"}),
    ):
        manager.add_column(
            table_class_name="AuditEvent",
            tablename=TABLE,
            column_name=name,
            column_class=column,
            params=params,
        )
    return manager
