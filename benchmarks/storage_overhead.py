"""Storage overhead: NOA's PostgreSQL driver against raw asyncpg, on the same database.

64 concurrent tasks each insert a row by primary key and select it back, first through
an asyncpg pool directly, then through ``noa.builtin_plugins.storage``'s
``PostgresStorage`` (the driver of ``[drivers] storage = "postgres"``), in alternating
rounds; the median round of each is shown with the ratio ours/raw (target >= 0.87).

    .venv/bin/python benchmarks/storage_overhead.py [--ops 10000] [--rounds 3] [--url postgresql://127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import uuid

import asyncpg
from concurrent_load import TASKS, measure
from noa.builtin_plugins.storage.postgres_driver import PostgresStorage

POOL = 10


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=10_000, help="pairs per run (default 10000)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--url", default="postgresql://127.0.0.1:5432/test", help="database")
    args = parser.parse_args()

    table = f"bench_{uuid.uuid4().hex[:10]}"
    raw = await asyncpg.create_pool(args.url, min_size=POOL, max_size=POOL)
    ours = PostgresStorage(args.url, min_size=POOL, max_size=POOL)
    await ours.start()
    await raw.execute(f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, name TEXT)")
    base = {"raw": 0, "ours": 0}

    async def raw_pair(i: int) -> object:
        key = base["raw"] + i
        async with raw.acquire() as conn:
            await conn.execute(f"INSERT INTO {table} (id, name) VALUES ($1, $2)", key, "n")
        async with raw.acquire() as conn:
            return await conn.fetchrow(f"SELECT id, name FROM {table} WHERE id = $1", key)

    async def our_pair(i: int) -> object:
        key = base["ours"] + i
        await ours.execute(f"INSERT INTO {table} (id, name) VALUES ($1, $2)", key, "n")
        return await ours.fetch_one(f"SELECT id, name FROM {table} WHERE id = $1", key)

    targets = {"raw": raw_pair, "ours": our_pair}
    results: dict[str, list[float]] = {"raw": [], "ours": []}
    try:
        for round_no in range(1, args.rounds + 1):
            for target, op in targets.items():
                # Keys never repeat: raw uses even millions, ours odd ones.
                base[target] = (2 * round_no + (target == "ours")) * 1_000_000
                rate = await measure(args.ops, op)
                results[target].append(rate)
                print(f"round {round_no} {target:4s} {rate:10,.0f} insert+select/s", flush=True)
    finally:
        await raw.execute(f"DROP TABLE IF EXISTS {table}")
        await ours.close()
        await raw.close()

    raw_rate = statistics.median(results["raw"])
    our_rate = statistics.median(results["ours"])
    mark = "" if our_rate / raw_rate >= 0.87 else "  (below 0.87)"
    print(f"\n{TASKS} tasks, pool {POOL}, {args.ops} pairs per run, median of {args.rounds} rounds")
    print(
        f"  raw asyncpg {raw_rate:10,.0f}/s   NOA PostgresStorage {our_rate:10,.0f}/s   "
        f"ratio {our_rate / raw_rate:.2f}{mark}"
    )


if __name__ == "__main__":
    asyncio.run(main())
