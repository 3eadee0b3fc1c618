"""Bulk ingestion jobs through the broker: the report, idempotence, and a job that
survives its server stopping half-way (the in-process broker loses its queue; the next
start queues the unfinished parts again and each part is counted once)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from noa.plugin_sdk.testing.harness import boot

PLUGINS = ["http", "observability", "storage", "broker", "inference", "retrieval"]
TOPICS = ["rivers", "mountains", "forests", "deserts", "oceans", "glaciers", "islands"]


def documents(count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"doc-{i}",
            "text": f"Document {i} describes {TOPICS[i % len(TOPICS)]} in region {i // 7}.",
            "metadata": {"topic": TOPICS[i % len(TOPICS)]},
        }
        for i in range(count)
    ]


def config(data_dir: str, model_repository: Path) -> dict[str, Any]:
    return {"server": {"data_dir": data_dir}, "inference": {"repository": str(model_repository)}}


async def ready(client: Any) -> None:
    for _ in range(600):
        if (await client.get("/ready")).status_code == 200:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the server never became ready")


async def finished(client: Any, job_id: str) -> dict[str, Any]:
    for _ in range(1200):
        job: dict[str, Any] = (await client.get(f"/v1/ingest-jobs/{job_id}")).json()
        if job["state"] == "completed":
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not complete: {job}")


async def submit(client: Any, name: str, docs: list[dict[str, Any]]) -> dict[str, Any]:
    response = await client.post(f"/v1/collections/{name}/ingest-jobs", json={"documents": docs})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_job_reports_what_it_did(data_dir: str, model_repository: Path) -> None:
    async with boot(PLUGINS, config=config(data_dir, model_repository)) as server:
        client = server.client
        await ready(client)
        created = await client.post(
            "/v1/collections",
            json={"name": "geo-v1", "alias": "geo", "fields": {"topic": "keyword"}},
        )
        assert created.status_code == 201, created.text
        docs = documents(150)
        docs[10]["metadata"] = {"topic": 7}  # the wrong type for a keyword field
        docs[20]["text"] = " "
        queued = await submit(client, "geo", docs)
        assert queued["collection"] == "geo-v1"
        assert (queued["documents"], queued["parts"]) == (150, 3)

        job = await finished(client, queued["id"])
        assert (job["ingested"], job["skipped"], job["failed"]) == (148, 0, 2)
        assert {f["id"]: f["code"] for f in job["failures"]}["doc-20"] == "empty_text"
        assert "doc-10" in {f["id"] for f in job["failures"]}
        info = (await client.get("/v1/collections/geo")).json()
        assert info["points"] == job["chunks"] == 148

        found = await client.post(
            "/v1/search",
            json={"collection": "geo", "text": "glaciers", "filter": {"topic": "glaciers"}},
        )
        assert found.status_code == 200
        assert {h["metadata"]["topic"] for h in found.json()["hits"]} == {"glaciers"}

        again = await finished(client, (await submit(client, "geo", docs))["id"])
        assert (again["ingested"], again["skipped"], again["failed"]) == (0, 148, 2)


async def test_client_mistakes(data_dir: str, model_repository: Path) -> None:
    settings = config(data_dir, model_repository)
    settings["retrieval"] = {"max_job_documents": 10}
    async with boot(PLUGINS, config=settings) as server:
        client = server.client
        await ready(client)
        assert (await client.post("/v1/collections", json={"name": "c"})).status_code == 201
        unknown = await client.post(
            "/v1/collections/nope/ingest-jobs", json={"documents": documents(1)}
        )
        assert unknown.status_code == 404
        too_many = await client.post(
            "/v1/collections/c/ingest-jobs", json={"documents": documents(11)}
        )
        assert too_many.status_code == 400
        assert "max_job_documents" in too_many.json()["error"]["message"]
        missing = await client.get("/v1/ingest-jobs/0123")
        assert missing.status_code == 404


async def test_without_a_broker_jobs_answer_503(data_dir: str, model_repository: Path) -> None:
    plugins = [p for p in PLUGINS if p != "broker"]
    async with boot(plugins, config=config(data_dir, model_repository)) as server:
        client = server.client
        await ready(client)
        assert (await client.post("/v1/collections", json={"name": "c"})).status_code == 201
        refused = await client.post(
            "/v1/collections/c/ingest-jobs", json={"documents": documents(1)}
        )
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "jobs_unavailable"
        direct = await client.post("/v1/collections/c/documents", json={"documents": documents(1)})
        assert direct.status_code == 200


async def test_a_job_survives_its_server_stopping(data_dir: str, model_repository: Path) -> None:
    docs = documents(1280)  # 20 parts: more than a server does before it is stopped
    async with boot(PLUGINS, config=config(data_dir, model_repository)) as first:
        await ready(first.client)
        created = await first.client.post("/v1/collections", json={"name": "big"})
        assert created.status_code == 201
        job_id = (await submit(first.client, "big", docs))["id"]
    async with boot(PLUGINS, config=config(data_dir, model_repository)) as second:
        await ready(second.client)
        interrupted = (await second.client.get(f"/v1/ingest-jobs/{job_id}")).json()
        job = await finished(second.client, job_id)
        info = (await second.client.get("/v1/collections/big")).json()
    assert interrupted["done_parts"] < interrupted["parts"] == 20
    assert job["ingested"] + job["skipped"] == 1280
    assert job["failed"] == 0
    assert info["points"] == 1280
