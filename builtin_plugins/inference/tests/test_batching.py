"""The dynamic batcher: merging, bounds, order, timeouts, refusals, dropped clients.

The batcher drives any function from a batch of token lists to rows; here that function
records what it was given and answers rows that say which input they came from, so
every promise about batches can be checked exactly.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest
from noa.builtin_plugins.inference.batching import Batcher
from noa.builtin_plugins.inference.errors import (
    ClientGone,
    ModelNotReady,
    QueueFull,
    RequestTimedOut,
)
from noa.builtin_plugins.inference.text import Tokenized


class Recorder:
    """A model that echoes each input's first token id and length, recording batches."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay_s = delay_s
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, batch: Sequence[Tokenized], normalize: bool) -> np.ndarray:
        self.gate.wait(10)
        self.batches.append([t.ids[0] for t in batch])
        time.sleep(self.delay_s)
        return np.array([[t.ids[0], len(t.ids)] for t in batch], np.float32)


def items(*ids: int, length: int = 3) -> list[Tokenized]:
    return [Tokenized([i] * length) for i in ids]


async def started(run: Recorder, **options: float) -> Batcher:
    batcher = Batcher("m", run, width=2, **options)  # type: ignore[arg-type]
    batcher.start()
    return batcher


async def test_concurrent_requests_share_a_batch_and_keep_their_order() -> None:
    run = Recorder()
    batcher = await started(run, max_batch_size=32, max_queue_delay_ms=50)
    results = await asyncio.gather(
        *[batcher.submit(items(10 * r, 10 * r + 1), normalize=True, timeout_s=5) for r in range(8)]
    )
    for r, rows in enumerate(results):
        assert rows[:, 0].tolist() == [10 * r, 10 * r + 1]
    assert len(run.batches) == 1 and len(run.batches[0]) == 16
    await batcher.close()


async def test_no_batch_exceeds_the_maximum_whatever_the_requests() -> None:
    run = Recorder()
    batcher = await started(run, max_batch_size=4, max_queue_delay_ms=5)
    big = batcher.submit(items(*range(100, 111)), normalize=True, timeout_s=5)
    small = [batcher.submit(items(i), normalize=True, timeout_s=5) for i in range(7)]
    out = await asyncio.gather(big, *small)
    assert out[0][:, 0].tolist() == list(range(100, 111))
    assert [row[0, 0] for row in out[1:]] == list(range(7))
    assert max(len(b) for b in run.batches) == 4
    assert sum(len(b) for b in run.batches) == 18
    await batcher.close()


async def test_items_of_similar_length_are_grouped() -> None:
    run = Recorder()
    run.gate.clear()  # hold the first batch so the rest queue up behind it
    batcher = await started(run, max_batch_size=2, max_queue_delay_ms=1)
    first = asyncio.ensure_future(batcher.submit(items(1), normalize=True, timeout_s=5))
    await asyncio.sleep(0.05)
    lengths = {2: 5, 3: 100, 4: 6, 5: 101}
    waiting = [
        asyncio.ensure_future(batcher.submit(items(i, length=n), normalize=True, timeout_s=5))
        for i, n in lengths.items()
    ]
    await asyncio.sleep(0.05)
    run.gate.set()
    await asyncio.gather(first, *waiting)
    # The oldest (2, short) goes first with the other short one; the long two together.
    assert run.batches[1:] == [[2, 4], [3, 5]]
    await batcher.close()


async def test_a_full_queue_refuses_at_once_with_retry_after() -> None:
    run = Recorder()
    run.gate.clear()
    batcher = await started(run, max_batch_size=2, max_queue_items=4, max_queue_delay_ms=0)
    held = asyncio.ensure_future(batcher.submit(items(1, 2), normalize=True, timeout_s=5))
    await asyncio.sleep(0.05)  # that batch is now computing (blocked on the gate)
    queued = asyncio.ensure_future(batcher.submit(items(3, 4, 5, 6), normalize=True, timeout_s=5))
    await asyncio.sleep(0)
    with pytest.raises(QueueFull) as refused:
        await batcher.submit(items(7), normalize=True, timeout_s=5)
    assert refused.value.status_code == 429
    assert int(refused.value.headers["Retry-After"]) >= 1
    run.gate.set()
    await asyncio.gather(held, queued)
    await batcher.close()


async def test_a_request_past_its_timeout_fails_and_is_never_computed() -> None:
    run = Recorder()
    run.gate.clear()
    batcher = await started(run, max_batch_size=1, max_queue_delay_ms=0)
    held = asyncio.ensure_future(batcher.submit(items(1), normalize=True, timeout_s=5))
    await asyncio.sleep(0.05)
    with pytest.raises(RequestTimedOut) as late:
        await batcher.submit(items(2), normalize=True, timeout_s=0.05)
    assert late.value.status_code == 504
    run.gate.set()
    await held
    await asyncio.sleep(0.05)
    assert [2] not in run.batches
    await batcher.close()


async def test_a_request_whose_client_went_away_is_dropped_before_compute() -> None:
    run = Recorder()
    run.gate.clear()
    batcher = await started(run, max_batch_size=1, max_queue_delay_ms=0)
    held = asyncio.ensure_future(batcher.submit(items(1), normalize=True, timeout_s=5))
    await asyncio.sleep(0.05)
    gone = asyncio.Event()
    abandoned = asyncio.ensure_future(
        batcher.submit(items(2, 3), normalize=True, timeout_s=5, cancelled=gone)
    )
    await asyncio.sleep(0.01)
    gone.set()
    with pytest.raises(ClientGone):
        await abandoned
    run.gate.set()
    await held
    after = await batcher.submit(items(4), normalize=True, timeout_s=5)
    assert after[0, 0] == 4
    assert run.batches == [[1], [4]]
    await batcher.close()


async def test_closing_fails_what_is_queued_with_503() -> None:
    run = Recorder()
    run.gate.clear()
    batcher = await started(run, max_batch_size=1, max_queue_delay_ms=0)
    held = asyncio.ensure_future(batcher.submit(items(1), normalize=True, timeout_s=5))
    await asyncio.sleep(0.05)
    queued = asyncio.ensure_future(batcher.submit(items(2), normalize=True, timeout_s=5))
    await asyncio.sleep(0.01)
    closing = asyncio.ensure_future(batcher.close())
    await asyncio.sleep(0.01)
    run.gate.set()
    await closing
    with pytest.raises(ModelNotReady):
        await queued
    with pytest.raises(ModelNotReady):
        await batcher.submit(items(3), normalize=True, timeout_s=1)
    assert (await held)[0, 0] == 1


async def test_a_failing_batch_fails_its_requests_not_the_batcher() -> None:
    calls = 0

    def flaky(batch: Sequence[Tokenized], normalize: bool) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("kernel exploded")
        return np.zeros((len(batch), 2), np.float32)

    batcher = Batcher("m", flaky, width=2, max_batch_size=8, max_queue_delay_ms=0)
    batcher.start()
    with pytest.raises(RuntimeError, match="kernel exploded"):
        await batcher.submit(items(1), normalize=True, timeout_s=5)
    rows = await batcher.submit(items(2), normalize=True, timeout_s=5)
    assert rows.shape == (1, 2)
    await batcher.close()
