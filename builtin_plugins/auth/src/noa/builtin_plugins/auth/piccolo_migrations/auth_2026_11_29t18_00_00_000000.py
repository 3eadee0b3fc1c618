"""Creates noa_auth_api_key: API keys, stored as the SHA-256 of the key, never the key."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns import JSON, BigInt, DoublePrecision, Integer, Varchar

ID = "2026-11-29T18:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "API keys table"

TABLE = "noa_auth_api_key"
NULLABLE = {"null": True, "default": None}


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="auth", description=DESCRIPTION)
    manager.add_table(class_name="ApiKey", tablename=TABLE)
    for name, column, params in (
        # The public part of the key: its primary key, no serial id.
        ("id", Varchar, {"length": 12, "primary_key": True}),
        ("name", Varchar, {"length": 200}),
        ("key_hash", Varchar, {"length": 64}),
        ("scopes", JSON, {"default": "[]"}),
        ("created_at", DoublePrecision, {"default": 0.0}),
        ("expires_at", DoublePrecision, NULLABLE),
        ("revoked_at", DoublePrecision, NULLABLE),
        ("rate_per_s", DoublePrecision, NULLABLE),
        ("rate_burst", Integer, NULLABLE),
        ("quota_per_day", BigInt, NULLABLE),
        ("created_by", Varchar, {"length": 200, "default": ""}),
    ):
        manager.add_column(
            table_class_name="ApiKey",
            tablename=TABLE,
            column_name=name,
            column_class=column,
            params=params,
        )
    return manager
