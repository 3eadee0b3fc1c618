"""Retrieval through the API layer against the vector store driver and NumPy, one run.

    .venv/bin/python benchmarks/retrieval_api.py                 # 100,000 x 384, ~2 minutes
    .venv/bin/python benchmarks/retrieval_api.py --size 10000 --queries 100 --json out.json

Starts ``noa serve --profile embedded`` (the default model must be in ``.noa/models``:
``./scripts/setup`` puts it there) on a fresh data folder and creates a collection of the
default model (384 dimensions) through ``POST /v1/collections``. The benchmark process
then fills it with ``--size`` normalised random vectors through the embedded driver on
the same folder (the server's worker sees them, as another worker would), with payloads
``{"group": i % 10, "tag": one of 4, "rank": uniform}`` declared as fields.

Then, on the same data and queries:

- ``api``: ``POST /v1/search`` with a vector, top 10, one request at a time over a
  keep-alive connection: unfiltered and with two filters (10% and 25% of the points);
  p50/p99 and recall@10 against an exact float64 search.
- ``driver``: the same searches through the driver's async API in this process.
- ``numpy``: a float32 matrix-vector product and ``argpartition`` on all rows.
- ``api_text``: ``POST /v1/search`` with a text (embedding the query included).
- ``api_ingest``: ``--docs`` short documents through ``POST /v1/collections/{name}/documents``
  in calls of 64 (chunked, embedded by the model, upserted), documents/s, beside
  ``POST /v1/embed`` of the same texts in calls of 64: the embedding alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from inference_http import NOA, ROOT, free_port, wait_ready
from noa.builtin_plugins.retrieval.embedded import EmbeddedVectorStore
from vectors_embedded import FILTERS, DataSet

FIELDS = {"group": "integer", "tag": "keyword", "rank": "float"}
WORDS = ["river", "mountain", "quiet", "engine", "lantern", "harbor", "violet", "copper"]


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(samples) * 1e3, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1e3, 3),
    }


def start_server(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOA_")}
    env["NOA_INFERENCE__REPOSITORY"] = str(ROOT / ".noa" / "models")
    env["NOA_OBSERVABILITY__ACCESS_LOG"] = "false"
    env["NOA_SERVER__DATA_DIR"] = str(workdir / "data")
    return subprocess.Popen(
        [NOA, "serve", "--profile", "embedded", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def api_searches(client: httpx.Client, data: DataSet) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for label, where in FILTERS.items():
        times, found = [], 0
        for query, best in zip(data.queries, data.best[label], strict=True):
            body = {"collection": "bench", "vector": query.tolist(), "top_k": 10}
            if where:
                body["filter"] = where
            began = time.perf_counter()
            response = client.post("/v1/search", json=body)
            times.append(time.perf_counter() - began)
            response.raise_for_status()
            found += len({h["id"] for h in response.json()["hits"]} & best)
        result[label] = {**summary(times), "recall_at_10": found / (10 * len(data.queries))}
    return result


async def driver_searches(store: EmbeddedVectorStore, data: DataSet) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for label, where in FILTERS.items():
        times, found = [], 0
        for query, best in zip(data.queries, data.best[label], strict=True):
            as_list = query.tolist()
            began = time.perf_counter()
            hits = await store.search("bench", as_list, 10, where or None)
            times.append(time.perf_counter() - began)
            found += len({h.id for h in hits} & best)
        result[label] = {**summary(times), "recall_at_10": found / (10 * len(data.queries))}
    return result


def numpy_searches(data: DataSet) -> dict[str, Any]:
    times = []
    for query in data.queries:
        began = time.perf_counter()
        scores = data.matrix @ query
        np.argpartition(-scores, 10)[:10]
        times.append(time.perf_counter() - began)
    return {"none": summary(times)}


def api_ingest(client: httpx.Client, docs: int) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    texts = [
        f"Note {i}: " + " ".join(WORDS[j] for j in rng.integers(0, len(WORDS), 12)) + "."
        for i in range(docs)
    ]
    created = client.post("/v1/collections", json={"name": "ingest"})
    created.raise_for_status()
    began = time.perf_counter()
    for start in range(0, docs, 64):
        batch = [{"id": f"d{i}", "text": texts[i]} for i in range(start, min(docs, start + 64))]
        response = client.post("/v1/collections/ingest/documents", json={"documents": batch})
        response.raise_for_status()
    ingest_s = time.perf_counter() - began
    began = time.perf_counter()
    for start in range(0, docs, 64):
        client.post("/v1/embed", json={"input": texts[start : start + 64]}).raise_for_status()
    embed_s = time.perf_counter() - began
    return {
        "documents_per_s": round(docs / ingest_s, 1),
        "embed_only_texts_per_s": round(docs / embed_s, 1),
        "ingest_over_embed_time": round(ingest_s / embed_s, 3),
    }


async def fill(path: Path, data: DataSet) -> tuple[EmbeddedVectorStore, float]:
    store = EmbeddedVectorStore(path)
    await store.start()
    size = len(data.matrix)
    began = time.perf_counter()
    for start in range(0, size, 1000):
        await store.upsert("bench", data.points(range(start, min(size, start + 1000))))
    return store, time.perf_counter() - began


def text_searches(client: httpx.Client, queries: int) -> dict[str, float]:
    times = []
    for i in range(queries):
        body = {"collection": "bench", "text": f"{WORDS[i % len(WORDS)]} {i}"}
        began = time.perf_counter()
        client.post("/v1/search", json=body).raise_for_status()
        times.append(time.perf_counter() - began)
    return summary(times)


def run(size: int, queries: int, docs: int) -> dict[str, Any]:
    data = DataSet(size, 384, queries)
    with tempfile.TemporaryDirectory(prefix="noa-retrieval-bench-") as workdir:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(Path(workdir), port)
        try:
            wait_ready(url, proc)
            with httpx.Client(base_url=url, timeout=60) as client, asyncio.Runner() as loop:
                created = client.post("/v1/collections", json={"name": "bench", "fields": FIELDS})
                created.raise_for_status()
                store, fill_s = loop.run(fill(Path(workdir) / "data" / "vectors", data))
                points = client.get("/v1/collections/bench").json()["points"]
                assert points == size, f"the server sees {points} points, not {size}"
                warm_up = {"collection": "bench", "vector": data.queries[0].tolist()}
                client.post("/v1/search", json=warm_up).raise_for_status()
                result: dict[str, Any] = {
                    "size": size,
                    "queries": queries,
                    "driver_ingest_vectors_per_s": round(size / fill_s),
                    "api": api_searches(client, data),
                    "driver": loop.run(driver_searches(store, data)),
                    "numpy": numpy_searches(data),
                }
                loop.run(store.close())
                result["api_text"] = text_searches(client, queries)
                result["api_ingest"] = api_ingest(client, docs)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    for label in FILTERS:
        api, driver = result["api"][label]["p50_ms"], result["driver"][label]["p50_ms"]
        result["api"][label]["api_over_driver_p50"] = round(api / driver, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--docs", type=int, default=1024)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.size, args.queries, args.docs)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
