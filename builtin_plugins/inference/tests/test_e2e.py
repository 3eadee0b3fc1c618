"""A real ``noa serve`` on the embedded profile serving the real model over HTTP."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

MODEL = "sentence-transformers/all-MiniLM-L6-v2"

pytestmark = pytest.mark.e2e


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _serve(serve: Any, repository: Path, **extra: str) -> Any:
    env = {"NOA_INFERENCE__REPOSITORY": str(repository), **extra}
    server = serve("--profile", "embedded", env=env)
    server.wait_ready(timeout=120)
    return server


def test_the_embedded_profile_embeds_and_batches_concurrent_requests(
    serve: Any, model_repository: Path
) -> None:
    server = _serve(serve, model_repository)
    texts = [f"concurrent request number {i} about rivers" for i in range(48)]

    def one(text: str) -> list[float]:
        response = httpx.post(server.url + "/v1/embed", json={"input": text}, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()["embeddings"][0]

    with concurrent.futures.ThreadPoolExecutor(48) as pool:
        vectors = np.array(list(pool.map(one, texts)))
    together = httpx.post(server.url + "/v1/embed", json={"input": texts}, timeout=60).json()
    np.testing.assert_allclose(vectors, np.array(together["embeddings"]), atol=1e-5)
    assert together["model"] == MODEL and together["dimensions"] == 384
    metrics = httpx.get(server.url + "/metrics").text
    batches = _metric(metrics, "inference_batch_size_count", model=MODEL)
    assert batches < 48 + 2  # concurrent requests shared batches
    assert _metric(metrics, "inference_requests_total", model=MODEL, status="ok") == 49
    assert _metric(metrics, "inference_batch_size_bucket", model=MODEL, le="+Inf") == batches
    assert _metric(metrics, "inference_batch_size_bucket", model=MODEL, le="32.0") == batches
    assert "inference_queue_depth" in metrics and "inference_duration_seconds_bucket" in metrics


def test_a_client_that_goes_away_is_not_computed(serve: Any, model_repository: Path) -> None:
    server = _serve(
        serve,
        model_repository,
        NOA_INFERENCE__MAX_BATCH_SIZE="1",
        NOA_INFERENCE__MAX_QUEUE_DELAY_MS="0",
    )
    busy = concurrent.futures.ThreadPoolExecutor(1).submit(
        httpx.post,
        server.url + "/v1/embed",
        json={"input": ["a long text to keep the model busy " * 30] * 120},
        timeout=120,
    )
    time.sleep(0.5)
    body = json.dumps({"input": "nobody will read this answer"}).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        raw.sendall(
            b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(0.3)
    assert busy.result().status_code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        metrics = httpx.get(server.url + "/metrics").text
        if _metric(metrics, "inference_requests_total", model=MODEL, status="client_gone"):
            break
        time.sleep(0.1)
    assert _metric(metrics, "inference_requests_total", model=MODEL, status="client_gone") == 1
    # 120 inputs of the busy request, one batch each; the abandoned one never ran.
    assert _metric(metrics, "inference_batch_size_count", model=MODEL) == 120


@pytest.mark.nats
def test_admin_calls_reach_every_worker_through_the_broker(
    serve: Any, model_repository: Path
) -> None:
    import asyncio
    import uuid

    import nats

    tag = uuid.uuid4().hex[:12]
    server = serve(
        "--profile",
        "embedded",
        "--workers",
        "2",
        env={
            "NOA_INFERENCE__REPOSITORY": str(model_repository),
            "NOA_DRIVERS__BROKER": "nats",
            "NOA_BROKER__NATS_STREAM": f"NOATEST_{tag}",
            "NOA_BROKER__SUBJECT_PREFIX": f"noatest{tag}",
        },
    )
    try:
        server.wait_ready(timeout=120)

        def statuses(count: int = 24) -> set[int]:
            # A new connection each time, so both workers answer some of them.
            return {
                httpx.post(server.url + "/v1/embed", json={"input": "hi"}, timeout=60).status_code
                for _ in range(count)
            }

        deadline = time.monotonic() + 60
        while statuses() != {200} and time.monotonic() < deadline:
            time.sleep(0.5)  # the other worker may still be loading
        assert statuses() == {200}
        unloaded = httpx.post(server.url + "/v1/admin/models/unload", json={"model": MODEL})
        assert unloaded.json()["state"] == "unloaded"
        time.sleep(1.0)  # the announcement reaches the other worker
        assert statuses() == {503}
        loaded = httpx.post(server.url + "/v1/admin/models/load", json={"model": MODEL})
        assert loaded.json()["state"] == "ready"
        deadline = time.monotonic() + 30
        while statuses(8) != {200} and time.monotonic() < deadline:
            time.sleep(0.5)
        assert statuses() == {200}
    finally:
        server.kill()

        async def drop_stream() -> None:
            nc = await nats.connect("nats://127.0.0.1:4222")
            try:
                await nc.jetstream().delete_stream(f"NOATEST_{tag}")
            finally:
                await nc.close()

        asyncio.run(drop_stream())
