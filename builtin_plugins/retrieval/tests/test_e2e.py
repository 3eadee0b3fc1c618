"""A real ``noa serve`` on the embedded profile: two workers sharing the embedded
vector store and the catalog, and an ingestion job that survives SIGKILL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

TOPICS = ["rivers", "mountains", "forests", "deserts", "oceans", "glaciers", "islands"]


def documents(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "id": f"doc-{i}",
            "text": f"Document {i} describes {TOPICS[i % len(TOPICS)]} in region {i // 7}.",
            "metadata": {"topic": TOPICS[i % len(TOPICS)]},
        }
        for i in range(start, start + count)
    ]


class Fresh(httpx.Client):
    """A client whose every request opens a new connection, so the workers share them.

    Each worker loads the model itself, so a request may reach one still loading it and
    get 503 ``model_not_ready``, as a real client can: it tries again, as one should.
    """

    def request(self, *args: Any, **kwargs: Any) -> httpx.Response:  # type: ignore[override]
        deadline = time.monotonic() + 120
        while True:
            response = super().request(*args, **kwargs)
            loading = response.status_code == 503 and "model_not_ready" in response.text
            if not loading or time.monotonic() > deadline:
                return response
            time.sleep(0.2)


def fresh(server: Any) -> httpx.Client:
    return Fresh(base_url=server.url, headers={"Connection": "close"}, timeout=60)


def test_two_workers_share_collections_documents_and_aliases(
    serve: Any, model_repository: Path
) -> None:
    env = {"NOA_INFERENCE__REPOSITORY": str(model_repository)}
    server = serve("--profile", "embedded", "--workers", "2", env=env)
    server.wait_ready(timeout=120)
    with fresh(server) as client:
        created = client.post(
            "/v1/collections",
            json={"name": "geo-v1", "alias": "geo", "fields": {"topic": "keyword"}},
        )
        assert created.status_code == 201, created.text
        for batch in range(4):  # each call may land on either worker
            report = client.post(
                "/v1/collections/geo/documents", json={"documents": documents(10, 10 * batch)}
            )
            assert report.status_code == 200, report.text
            assert report.json()["ingested"] == 10
        for _ in range(12):
            assert client.get("/v1/collections/geo").json()["points"] == 40
            found = client.post(
                "/v1/search",
                json={"collection": "geo", "text": "glaciers", "filter": {"topic": "glaciers"}},
            )
            assert found.status_code == 200, found.text
            hits = found.json()["hits"]
            assert len(hits) == 5 and {h["metadata"]["topic"] for h in hits} == {"glaciers"}
        created = client.post("/v1/collections", json={"name": "geo-v2"})
        assert created.status_code == 201, created.text
        client.post("/v1/collections/geo-v2/documents", json={"documents": documents(3)})
        assert client.put("/v1/aliases/geo", json={"collection": "geo-v2"}).status_code == 200
        assert client.delete("/v1/collections/geo-v1").status_code == 204
        for _ in range(12):
            found = client.post("/v1/search", json={"collection": "geo", "text": "rivers"})
            assert found.status_code == 200, found.text
            assert found.json()["collection"] == "geo-v2"
            assert client.get("/v1/collections/geo").json()["points"] == 3
    assert server.terminate() == 0


def test_an_ingestion_job_survives_sigkill(serve: Any, model_repository: Path) -> None:
    env = {"NOA_INFERENCE__REPOSITORY": str(model_repository)}
    first = serve("--profile", "embedded", env=env)
    first.wait_ready(timeout=120)
    with httpx.Client(base_url=first.url, timeout=60) as client:
        assert client.post("/v1/collections", json={"name": "big"}).status_code == 201
        queued = client.post("/v1/collections/big/ingest-jobs", json={"documents": documents(1280)})
        assert queued.status_code == 202, queued.text
        job_id = queued.json()["id"]
        deadline = time.monotonic() + 120
        while client.get(f"/v1/ingest-jobs/{job_id}").json()["done_parts"] < 2:
            assert time.monotonic() < deadline, "no part was done"
            time.sleep(0.05)
    first.kill()  # SIGKILL, mid-job

    second = serve("--profile", "embedded", env=env)
    second.wait_ready(timeout=120)
    with httpx.Client(base_url=second.url, timeout=60) as client:
        interrupted = client.get(f"/v1/ingest-jobs/{job_id}").json()
        deadline = time.monotonic() + 300
        job = interrupted
        while job["state"] != "completed":
            assert time.monotonic() < deadline, f"the job did not complete: {job}"
            time.sleep(0.1)
            job = client.get(f"/v1/ingest-jobs/{job_id}").json()
        points = client.get("/v1/collections/big").json()["points"]
    assert interrupted["done_parts"] < interrupted["parts"] == 20
    assert job["failed"] == 0
    assert job["ingested"] + job["skipped"] == 1280
    assert points == 1280
    assert second.terminate() == 0
