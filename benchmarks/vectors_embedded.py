"""The embedded vector store against a NumPy brute force on the same data.

    .venv/bin/python benchmarks/vectors_embedded.py                  # 100,000 x 384, ~1 minute
    .venv/bin/python benchmarks/vectors_embedded.py --size 10000 --queries 100
    .venv/bin/python benchmarks/vectors_embedded.py --json out.json

Normalised random vectors (the hardest case for a first pass: their scores bunch
together) with payloads ``{"group": i % 10, "tag": one of 4, "rank": uniform}``, all
declared as fields. It reports ingest (vectors/s through ``upsert``, batches of
``--batch`` points given as lists of floats, as an API would pass them, every batch
synced to disk), search p50/p99 of top-10 through the driver's async API, unfiltered
and with two filters, recall@10 against an exact float64 search, the time to reopen
the collection, and the NumPy baseline: a float32 matrix-vector product and
``argpartition`` on all rows, and on a slice pre-filtered outside the timer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from typing import Any

import numpy as np
from noa.builtin_plugins.retrieval.embedded import EmbeddedVectorStore
from noa.plugin_sdk.ports.vectors import Point

TAGS = ["red", "green", "blue", "cyan"]
FILTERS: dict[str, dict[str, Any]] = {
    "none": {},
    "group=3 (10%)": {"group": 3},
    "tag any 2 & rank>=0.5 (25%)": {"tag": {"any": ["red", "blue"]}, "rank": {"gte": 0.5}},
}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(samples) * 1e3, 3),
        "p99_ms": round(percentile(samples, 0.99) * 1e3, 3),
    }


async def run(size: int, dim: int, queries: int, batch: int) -> dict[str, Any]:
    rng = np.random.default_rng(42)
    matrix = rng.standard_normal((size, dim), dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    groups = np.arange(size) % 10
    tags = rng.integers(0, len(TAGS), size)
    ranks = rng.random(size)
    masks = {
        "none": np.ones(size, dtype=bool),
        "group=3 (10%)": groups == 3,
        "tag any 2 & rank>=0.5 (25%)": np.isin(tags, [0, 2]) & (ranks >= 0.5),
    }
    query_set = rng.standard_normal((queries, dim)).astype(np.float32)
    query_set /= np.linalg.norm(query_set, axis=1, keepdims=True)
    result: dict[str, Any] = {"size": size, "dim": dim, "queries": queries, "batch": batch}

    with tempfile.TemporaryDirectory(prefix="noa-vectors-bench-") as folder:
        store = EmbeddedVectorStore(folder)
        await store.start()
        fields: dict[str, Any] = {"group": "integer", "tag": "keyword", "rank": "float"}
        await store.create_collection("bench", dim, "cosine", fields)
        spent = 0.0
        for start in range(0, size, batch):
            rows = range(start, min(size, start + batch))
            points = [
                Point(
                    id=f"doc-{i}",
                    vector=matrix[i].tolist(),
                    payload={
                        "group": int(groups[i]),
                        "tag": TAGS[tags[i]],
                        "rank": float(ranks[i]),
                    },
                )
                for i in rows
            ]
            began = time.perf_counter()
            await store.upsert("bench", points)
            spent += time.perf_counter() - began
        result["ingest_vectors_per_s"] = round(size / spent)
        await store.close()

        began = time.perf_counter()
        store = EmbeddedVectorStore(folder)
        await store.start()
        result["reopen_s"] = round(time.perf_counter() - began, 3)

        result["search"] = {}
        for label, where in FILTERS.items():
            mask = masks[label]
            await store.search("bench", query_set[0].tolist(), 10, where or None)  # warm up
            times, found = [], 0
            for query in query_set:
                as_list = query.tolist()
                began = time.perf_counter()
                hits = await store.search("bench", as_list, 10, where or None)
                times.append(time.perf_counter() - began)
                exact = matrix.astype(np.float64)[mask] @ query.astype(np.float64)
                best = np.flatnonzero(mask)[np.argsort(-exact)[:10]]
                found += len({h.id for h in hits} & {f"doc-{i}" for i in best})
            result["search"][label] = {**summary(times), "recall_at_10": found / (10 * queries)}
        await store.close()

    baseline: dict[str, Any] = {}
    for label, mask in masks.items():
        sliced = matrix if label == "none" else np.ascontiguousarray(matrix[mask])
        times = []
        for query in query_set:
            began = time.perf_counter()
            scores = sliced @ query
            top = np.argpartition(-scores, 9)[:10]
            top[np.argsort(-scores[top])]
            times.append(time.perf_counter() - began)
        baseline[label] = summary(times)
    result["numpy_brute_force"] = baseline
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    result = asyncio.run(run(args.size, args.dim, args.queries, args.batch))
    result["cpus"] = os.cpu_count()
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)


if __name__ == "__main__":
    main()
