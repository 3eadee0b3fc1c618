"""Vector store drivers against a NumPy brute force on the same data.

    .venv/bin/python benchmarks/vectors_embedded.py                  # 100,000 x 384, ~1 minute
    .venv/bin/python benchmarks/vectors_embedded.py --size 10000 --queries 100
    .venv/bin/python benchmarks/vectors_embedded.py --driver embedded pgvector
    .venv/bin/python benchmarks/vectors_embedded.py --driver pgvector --pgvector-index hnsw \\
        --ef-search 40 100 200
    .venv/bin/python benchmarks/vectors_embedded.py --json out.json

Normalised random vectors (the hardest case for a first pass or a graph index: their
scores bunch together) with payloads ``{"group": i % 10, "tag": one of 4, "rank":
uniform}``, all declared as fields. For each driver asked for (``--driver``: embedded,
the default; pgvector, on ``--pg-url``, in a schema of its own dropped afterwards, once
per ``--pgvector-index``; qdrant-local) it reports ingest (vectors/s through ``upsert``,
batches of ``--batch`` points given as lists of floats, as an API would pass them),
search p50/p99 of top-10 through the driver's async API, unfiltered and with two
filters, recall@10 against an exact float64 search, and the time to reopen the store.
Then the NumPy baseline: a float32 matrix-vector product and ``argpartition`` on all
rows, and on a slice pre-filtered outside the timer.

The embedded driver's figures stay at the top level of the output, as they always were;
the others are under ``"drivers"``. A pgvector store with an HNSW index is searched once
per ``--ef-search`` value (one ingest).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from noa.builtin_plugins.retrieval.config import RetrievalConfig
from noa.plugin_sdk.ports.vectors import Point, VectorStorePort

TAGS = ["red", "green", "blue", "cyan"]
FILTERS: dict[str, dict[str, Any]] = {
    "none": {},
    "group=3 (10%)": {"group": 3},
    "tag any 2 & rank>=0.5 (25%)": {"tag": {"any": ["red", "blue"]}, "rank": {"gte": 0.5}},
}
DRIVERS = ("embedded", "pgvector", "qdrant-local")

# A store under test: ``open()`` gives a started store over the same data each time.
Opener = Callable[[], Awaitable[VectorStorePort]]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(samples) * 1e3, 3),
        "p99_ms": round(percentile(samples, 0.99) * 1e3, 3),
    }


class DataSet:
    def __init__(self, size: int, dim: int, queries: int) -> None:
        rng = np.random.default_rng(42)
        self.matrix = rng.standard_normal((size, dim), dtype=np.float32)
        self.matrix /= np.linalg.norm(self.matrix, axis=1, keepdims=True)
        self.groups = np.arange(size) % 10
        self.tags = rng.integers(0, len(TAGS), size)
        self.ranks = rng.random(size)
        self.masks = {
            "none": np.ones(size, dtype=bool),
            "group=3 (10%)": self.groups == 3,
            "tag any 2 & rank>=0.5 (25%)": np.isin(self.tags, [0, 2]) & (self.ranks >= 0.5),
        }
        self.queries = rng.standard_normal((queries, dim)).astype(np.float32)
        self.queries /= np.linalg.norm(self.queries, axis=1, keepdims=True)
        # The exact top 10 of each query under each filter, in float64.
        self.best: dict[str, list[set[str]]] = {}
        queries = self.queries.astype(np.float64).T
        for label, mask in self.masks.items():
            rows = np.flatnonzero(mask)
            scores = self.matrix[rows].astype(np.float64) @ queries
            self.best[label] = [
                {f"doc-{i}" for i in rows[np.argsort(-column)[:10]]} for column in scores.T
            ]

    def points(self, rows: range) -> list[Point]:
        return [
            Point(
                id=f"doc-{i}",
                vector=self.matrix[i].tolist(),
                payload={
                    "group": int(self.groups[i]),
                    "tag": TAGS[self.tags[i]],
                    "rank": float(self.ranks[i]),
                },
            )
            for i in rows
        ]


async def ingest(store: VectorStorePort, data: DataSet, batch: int) -> float:
    size, dim = data.matrix.shape
    fields: dict[str, Any] = {"group": "integer", "tag": "keyword", "rank": "float"}
    await store.create_collection("bench", dim, "cosine", fields)
    spent = 0.0
    for start in range(0, size, batch):
        points = data.points(range(start, min(size, start + batch)))
        began = time.perf_counter()
        await store.upsert("bench", points)
        spent += time.perf_counter() - began
    return round(size / spent)


async def searches(store: VectorStorePort, data: DataSet) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for label, where in FILTERS.items():
        await store.search("bench", data.queries[0].tolist(), 10, where or None)  # warm up
        times, found = [], 0
        for query, best in zip(data.queries, data.best[label], strict=True):
            as_list = query.tolist()
            began = time.perf_counter()
            hits = await store.search("bench", as_list, 10, where or None)
            times.append(time.perf_counter() - began)
            found += len({h.id for h in hits} & best)
        result[label] = {**summary(times), "recall_at_10": found / (10 * len(data.queries))}
    return result


async def measure(
    opener: Opener, data: DataSet, batch: int, reopen: dict[str, Opener] | None = None
) -> dict[str, Any]:
    """Ingest through one store, then time a reopen and the searches; ``reopen`` names
    further stores over the same data (e.g. other ef_search values) searched as well."""
    store = await opener()
    result: dict[str, Any] = {"ingest_vectors_per_s": await ingest(store, data, batch)}
    await store.close()
    began = time.perf_counter()
    store = await opener()
    result["reopen_s"] = round(time.perf_counter() - began, 3)
    result["search"] = await searches(store, data)
    await store.close()
    for label, other in (reopen or {}).items():
        store = await other()
        result[label] = {"search": await searches(store, data)}
        await store.close()
    return result


@asynccontextmanager
async def folder() -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory(prefix="noa-vectors-bench-") as path:
        yield path


async def run_embedded(data: DataSet, batch: int) -> dict[str, Any]:
    from noa.builtin_plugins.retrieval.embedded import EmbeddedVectorStore

    async with folder() as path:

        async def opener() -> VectorStorePort:
            store = EmbeddedVectorStore(path)
            await store.start()
            return store

        return await measure(opener, data, batch)


async def run_qdrant_local(data: DataSet, batch: int) -> dict[str, Any]:
    from noa.builtin_plugins.retrieval.qdrant_driver import QdrantLocalStore

    async with folder() as path:

        async def opener() -> VectorStorePort:
            store = QdrantLocalStore(path)
            await store.start()
            return store

        return await measure(opener, data, batch)


async def run_pgvector(
    data: DataSet, batch: int, url: str, index: Any, ef_search: list[int]
) -> dict[str, Any]:
    import asyncpg
    from noa.builtin_plugins.retrieval.pgvector_driver import PgVectorStore

    schema = f"noa_bench_{uuid.uuid4().hex[:10]}"

    def opener_for(ef: int) -> Opener:
        async def opener() -> VectorStorePort:
            store = PgVectorStore(url, schema=schema, index=index, ef_search=ef)
            await store.start()
            return store

        return opener

    others = {f"ef_search={ef}": opener_for(ef) for ef in ef_search[1:]} if index == "hnsw" else {}
    try:
        result = await measure(opener_for(ef_search[0]), data, batch, others)
    finally:
        conn = await asyncpg.connect(url)
        try:
            size = await conn.fetchval(
                "SELECT pg_total_relation_size(to_regclass($1))", f'"{schema}"."bench"'
            )
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
    result["index"] = index
    if index == "hnsw":
        result["ef_search"] = ef_search[0]
    result["table_and_indexes_mb"] = round((size or 0) / 2**20, 1)
    return result


def numpy_baseline(data: DataSet) -> dict[str, Any]:
    baseline: dict[str, Any] = {}
    for label, mask in data.masks.items():
        sliced = data.matrix if label == "none" else np.ascontiguousarray(data.matrix[mask])
        times = []
        for query in data.queries:
            began = time.perf_counter()
            scores = sliced @ query
            top = np.argpartition(-scores, 9)[:10]
            top[np.argsort(-scores[top])]
            times.append(time.perf_counter() - began)
        baseline[label] = summary(times)
    return baseline


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data = DataSet(args.size, args.dim, args.queries)
    result: dict[str, Any] = {
        "size": args.size,
        "dim": args.dim,
        "queries": args.queries,
        "batch": args.batch,
    }
    drivers: dict[str, Any] = {}
    for driver in dict.fromkeys(args.driver):
        if driver == "embedded":
            result.update(await run_embedded(data, args.batch))
        elif driver == "qdrant-local":
            drivers[driver] = await run_qdrant_local(data, args.batch)
        else:
            for index in dict.fromkeys(args.pgvector_index):
                label = "pgvector" if index == "none" else f"pgvector-{index}"
                drivers[label] = await run_pgvector(
                    data, args.batch, args.pg_url, index, args.ef_search
                )
    if drivers:
        result["drivers"] = drivers
    result["numpy_brute_force"] = numpy_baseline(data)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument(
        "--driver", nargs="+", choices=DRIVERS, default=["embedded"], help="drivers to measure"
    )
    parser.add_argument("--pg-url", default="postgresql://127.0.0.1:5432/test")
    parser.add_argument("--pgvector-index", nargs="+", choices=("none", "hnsw"), default=["none"])
    parser.add_argument(
        "--ef-search",
        nargs="+",
        type=int,
        default=[RetrievalConfig().pgvector_hnsw_ef_search],
        help="pgvector hnsw: the hnsw.ef_search values to search with",
    )
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    result["cpus"] = os.cpu_count()
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)


if __name__ == "__main__":
    main()
