"""Cache overhead: NOA's Redis cache driver against raw redis-py, on the same Redis.

64 concurrent tasks run SET (with a TTL) then GET of 16-byte-keyed 100-byte values,
first through ``redis.asyncio`` directly, then through ``noa.builtin_plugins.cache``'s
``RedisCache`` (the driver of ``[drivers] cache = "redis"``), in alternating rounds;
the median round of each is shown with the ratio ours/raw (target >= 0.87).

    .venv/bin/python benchmarks/cache_overhead.py [--ops 20000] [--rounds 3] [--url redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import uuid
from collections.abc import Awaitable, Callable

from concurrent_load import TASKS, measure
from noa.builtin_plugins.cache.redis_driver import RedisCache
from redis.asyncio import BlockingConnectionPool, Redis

VALUE = b"x" * 100
TTL_S = 60.0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ops", type=int, default=20_000, help="operations per run (default 20000)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0", help="Redis to use")
    args = parser.parse_args()

    prefix = f"noa-bench-{uuid.uuid4().hex[:8]}:"
    raw = Redis(connection_pool=BlockingConnectionPool.from_url(args.url, max_connections=TASKS))
    ours = RedisCache(args.url, prefix=prefix, pool_size=TASKS, timeout_s=5.0)
    px = int(TTL_S * 1000)
    scenarios: dict[str, dict[str, Callable[[int], Awaitable[object]]]] = {
        "SET": {
            "raw": lambda i: raw.set(f"{prefix}raw:{i:08d}", VALUE, px=px),
            "ours": lambda i: ours.set(f"ours:{i:08d}", VALUE, TTL_S),
        },
        "GET": {
            "raw": lambda i: raw.get(f"{prefix}raw:{i:08d}"),
            "ours": lambda i: ours.get(f"ours:{i:08d}"),
        },
    }
    results: dict[tuple[str, str], list[float]] = {}
    try:
        await measure(2_000, scenarios["SET"]["raw"])  # warm both pools
        await measure(2_000, scenarios["SET"]["ours"])
        for round_no in range(1, args.rounds + 1):
            for scenario, targets in scenarios.items():
                for target, op in targets.items():
                    rate = await measure(args.ops, op)
                    results.setdefault((scenario, target), []).append(rate)
                    print(
                        f"round {round_no} {scenario} {target:4s} {rate:10,.0f} ops/s", flush=True
                    )
    finally:
        await ours.clear()
        async for key in raw.scan_iter(match=f"{prefix}*", count=1000):
            await raw.unlink(key)
        await ours.close()
        await raw.aclose()

    print(f"\n{TASKS} tasks, {args.ops} operations per run, median of {args.rounds} rounds")
    for scenario in scenarios:
        raw_rate = statistics.median(results[(scenario, "raw")])
        our_rate = statistics.median(results[(scenario, "ours")])
        mark = "" if our_rate / raw_rate >= 0.87 else "  (below 0.87)"
        print(
            f"  {scenario}: raw redis-py {raw_rate:10,.0f} ops/s   NOA RedisCache "
            f"{our_rate:10,.0f} ops/s   ratio {our_rate / raw_rate:.2f}{mark}"
        )


if __name__ == "__main__":
    asyncio.run(main())
