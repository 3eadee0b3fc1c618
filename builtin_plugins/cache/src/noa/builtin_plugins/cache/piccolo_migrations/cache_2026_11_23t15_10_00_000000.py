"""Creates noa_cache_entry, the durable tier of the tiered cache."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns import Bytea, DoublePrecision, Varchar

ID = "2026-11-23T15:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "durable cache entries"

TABLE = "noa_cache_entry"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="cache", description=DESCRIPTION)
    manager.add_table(class_name="CacheEntry", tablename=TABLE)
    for name, column, params in (
        ("key", Varchar, {"length": 512, "unique": True}),
        ("value", Bytea, {}),
        ("expires_at", DoublePrecision, {"default": 0.0, "index": True}),
    ):
        manager.add_column(
            table_class_name="CacheEntry",
            tablename=TABLE,
            column_name=name,
            column_class=column,
            params=params,
        )
    return manager
