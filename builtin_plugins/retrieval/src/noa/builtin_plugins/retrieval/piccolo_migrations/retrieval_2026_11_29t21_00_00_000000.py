"""Creates the retrieval catalog: collections (embedder, model, chunking), aliases, the
documents ingested into each collection (how many chunks, a digest of the content), and
bulk ingestion jobs with their parts (the documents waiting to be ingested)."""

from typing import Any

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns import Boolean, Bytea, DoublePrecision, Integer, Text, Varchar

ID = "2026-11-29T21:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "Retrieval catalog: collections, aliases, documents, ingestion jobs"

TABLES: dict[str, tuple[str, list[tuple[str, Any, dict[str, Any]]]]] = {
    "noa_retrieval_collection": (
        "RetrievalCollection",
        [
            ("name", Varchar, {"length": 63, "primary_key": True}),
            ("embedder", Varchar, {"length": 100, "default": ""}),
            ("model", Varchar, {"length": 200, "default": ""}),
            ("dim", Integer, {"default": 0}),
            ("distance", Varchar, {"length": 10, "default": "cosine"}),
            ("fields", Text, {"default": "{}"}),
            ("chunking", Text, {"default": "{}"}),
            ("created_at", DoublePrecision, {"default": 0.0}),
        ],
    ),
    "noa_retrieval_alias": (
        "RetrievalAlias",
        [
            ("name", Varchar, {"length": 63, "primary_key": True}),
            ("collection", Varchar, {"length": 63, "index": True}),
            ("updated_at", DoublePrecision, {"default": 0.0}),
        ],
    ),
    "noa_retrieval_document": (
        "RetrievalDocument",
        [
            # "<collection>/<document id>": collection names hold no "/".
            ("key", Varchar, {"length": 400, "primary_key": True}),
            ("collection", Varchar, {"length": 63, "index": True}),
            ("chunks", Integer, {"default": 0}),
            ("digest", Varchar, {"length": 64, "default": ""}),
            ("updated_at", DoublePrecision, {"default": 0.0}),
        ],
    ),
    "noa_retrieval_job": (
        "RetrievalJob",
        [
            ("id", Varchar, {"length": 32, "primary_key": True}),
            ("collection", Varchar, {"length": 63}),
            ("state", Varchar, {"length": 16, "default": "queued"}),
            ("parts", Integer, {"default": 0}),
            ("done_parts", Integer, {"default": 0}),
            ("documents", Integer, {"default": 0}),
            ("ingested", Integer, {"default": 0}),
            ("skipped", Integer, {"default": 0}),
            ("failed", Integer, {"default": 0}),
            ("chunks", Integer, {"default": 0}),
            ("created_at", DoublePrecision, {"default": 0.0}),
            ("updated_at", DoublePrecision, {"default": 0.0}),
        ],
    ),
    "noa_retrieval_job_part": (
        "RetrievalJobPart",
        [
            # "<job id>/<part number>"
            ("key", Varchar, {"length": 48, "primary_key": True}),
            ("job", Varchar, {"length": 32, "index": True}),
            ("part", Integer, {"default": 0}),
            # The part's documents, msgpack; emptied once the part is done.
            ("documents", Bytea, {"default": b""}),
            ("done", Boolean, {"default": False}),
            # JSON list of the part's failed documents: id, code, message.
            ("failures", Text, {"default": "[]"}),
        ],
    ),
}


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="retrieval", description=DESCRIPTION)
    for table, (class_name, columns) in TABLES.items():
        manager.add_table(class_name=class_name, tablename=table)
        for name, column, params in columns:
            manager.add_column(
                table_class_name=class_name,
                tablename=table,
                column_name=name,
                column_class=column,
                params=params,
            )
    return manager
