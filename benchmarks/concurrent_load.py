"""The load both data benchmarks apply: one operation, many times, from many tasks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

TASKS = 64


async def measure(ops: int, op: Callable[[int], Awaitable[object]], tasks: int = TASKS) -> float:
    """Calls per second of ``op(i)`` for ``ops`` distinct ``i``, spread over ``tasks`` tasks."""
    per_task = ops // tasks

    async def worker(offset: int) -> None:
        for i in range(per_task):
            await op(offset + i)

    started = time.perf_counter()
    await asyncio.gather(*(worker(t * per_task) for t in range(tasks)))
    return per_task * tasks / (time.perf_counter() - started)
