"""Text in, relevant passages out on PostgreSQL: the retrieval catalog in the ``postgres``
storage driver and the vectors in the ``pgvector`` driver, through the same API as the
embedded profile, including an alias moved under concurrent searches.

The catalog tables are shared with other runs on the same database, so every collection
and alias here has a unique name and is removed afterwards.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from noa.builtin_plugins.storage.config import StorageConfig
from noa.builtin_plugins.storage.migrate import Migrator, make_engine
from noa.plugin_sdk.config import Secret
from noa.plugin_sdk.testing.harness import KernelUnderTest, boot

POSTGRES_URL = "postgresql://127.0.0.1:5432/test"
PLUGINS = ["http", "observability", "storage", "inference", "retrieval"]
DOCUMENTS = [
    {"id": "tea", "text": "Green tea is steeped in water just below boiling for two minutes."},
    {"id": "bike", "text": "Oil the bicycle chain after riding in the rain to stop rust."},
    {"id": "moon", "text": "The moon's phases follow its orbit around the earth each month."},
]

pytestmark = pytest.mark.postgres


@pytest.fixture
async def server(tmp_path: Path, model_repository: Path) -> AsyncIterator[KernelUnderTest]:
    apps = {"retrieval": "noa.builtin_plugins.retrieval.piccolo_app"}
    storage = StorageConfig(postgres_url=Secret(POSTGRES_URL))
    await Migrator(make_engine("postgres", storage, str(tmp_path)), apps).apply()
    schema = f"noa_test_{uuid.uuid4().hex[:12]}"
    config = {
        "server": {"data_dir": str(tmp_path)},
        "drivers": {"storage": "postgres", "vectors": "pgvector"},
        "storage": {"postgres_url": POSTGRES_URL},
        "retrieval": {"pgvector_schema": schema},
        "inference": {"repository": str(model_repository)},
    }
    try:
        async with boot(PLUGINS, config=config) as kernel:
            for _ in range(600):
                if (await kernel.client.get("/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            yield kernel
    finally:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            for table in (
                "noa_retrieval_alias",
                "noa_retrieval_document",
                "noa_retrieval_collection",
            ):
                column = "collection" if table != "noa_retrieval_collection" else "name"
                await conn.execute(f"DELETE FROM {table} WHERE {column} LIKE $1", f"{schema}%")
        finally:
            await conn.close()


async def test_text_in_passages_out_and_alias_swap(server: KernelUnderTest) -> None:
    client = server.client
    schema = server.kernel.config_value("retrieval.pgvector_schema")
    v1, v2, alias = f"{schema}-v1", f"{schema}-v2", f"{schema}-kb"
    created = await client.post("/v1/collections", json={"name": v1, "alias": alias})
    assert created.status_code == 201, created.text
    report = await client.post(f"/v1/collections/{alias}/documents", json={"documents": DOCUMENTS})
    assert report.json()["ingested"] == 3, report.text
    found = await client.post("/v1/search", json={"collection": alias, "text": "how to brew tea"})
    assert found.status_code == 200, found.text
    assert found.json()["hits"][0]["document_id"] == "tea"

    chunking = {"mode": "characters", "size": 40, "overlap": 0}
    created = await client.post("/v1/collections", json={"name": v2, "chunking": chunking})
    assert created.status_code == 201, created.text
    await client.post(f"/v1/collections/{v2}/documents", json={"documents": DOCUMENTS})

    failures: list[str] = []
    served: list[str] = []
    stop = asyncio.Event()

    async def searcher() -> None:
        while not stop.is_set():
            response = await client.post(
                "/v1/search", json={"collection": alias, "text": "rusty bicycle chain"}
            )
            if response.status_code != 200 or not response.json()["hits"]:
                failures.append(response.text)
            else:
                served.append(response.json()["collection"])

    tasks = [asyncio.create_task(searcher()) for _ in range(3)]
    try:
        await asyncio.sleep(0.5)
        moved = await client.put(f"/v1/aliases/{alias}", json={"collection": v2})
        assert moved.json()["previous"] == v1
        assert (await client.delete(f"/v1/collections/{v1}")).status_code == 204
        mark = len(served)
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert failures == []
    # A search in flight at the move may still answer from v1; the ones after it can't.
    assert set(served[mark + len(tasks) :]) == {v2}
    assert (await client.delete(f"/v1/aliases/{alias}")).status_code == 204
    assert (await client.delete(f"/v1/collections/{v2}")).status_code == 204
