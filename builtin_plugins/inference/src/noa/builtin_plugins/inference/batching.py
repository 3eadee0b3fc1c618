"""Dynamic batching: concurrent requests to one model are merged into batches.

Every request's items (texts, already tokenized) join one queue. A batch is cut when it
holds ``max_batch_size`` items or the oldest item has waited ``max_queue_delay_ms``. The
oldest waiting item always goes into the next batch (nothing starves); the rest are the
items whose lengths are closest to it, so a device that pads wastes little. A request
larger than a batch is spread over several; its rows come back in input order.

A request that timed out or whose client went away is marked cancelled, and its items
are dropped when the next batch is cut: they are never computed. A full queue refuses
new work at once (:class:`~.errors.QueueFull`, 429) rather than letting latency grow.

The compute runs on one thread per model, so the event loop never waits on a kernel.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from noa.builtin_plugins.inference.errors import (
    ClientGone,
    ModelNotReady,
    QueueFull,
    RequestTimedOut,
)
from noa.builtin_plugins.inference.text import Tokenized
from numpy.typing import NDArray

__all__ = ["BatchStats", "Batcher"]

RunBatch = Callable[[Sequence[Tokenized], bool], NDArray[np.float32]]


class BatchStats:
    """Hooks for metrics; the default records nothing."""

    def queue_depth(self, items: int) -> None:
        return None

    def batch(self, size: int) -> None:
        return None


class _Request:
    __slots__ = ("cancelled", "future", "normalize", "output", "remaining")

    def __init__(self, items: int, width: int, normalize: bool, loop: Any) -> None:
        self.output: NDArray[np.float32] = np.empty((items, width), np.float32)
        self.remaining = items
        self.normalize = normalize
        self.cancelled = False
        self.future: asyncio.Future[NDArray[np.float32]] = loop.create_future()


def _fail(request: _Request, exc: BaseException) -> None:
    # Nobody awaits a cancelled request's future: leave it, or asyncio logs the error.
    if not request.cancelled and not request.future.done():
        request.future.set_exception(exc)


def _client_gone(watcher: asyncio.Task[Any], request: _Request) -> None:
    if watcher.cancelled():
        return
    _fail(request, ClientGone())
    request.cancelled = True


class _Item:
    __slots__ = ("arrived", "index", "length", "request", "tokens")

    def __init__(self, request: _Request, index: int, tokens: Tokenized, arrived: float) -> None:
        self.request = request
        self.index = index
        self.tokens = tokens
        self.length = len(tokens.ids)
        self.arrived = arrived


class Batcher:
    """The queue and batch loop in front of one model."""

    def __init__(
        self,
        name: str,
        run: RunBatch,
        *,
        width: int,
        max_batch_size: int = 32,
        max_queue_delay_ms: float = 2.0,
        max_queue_items: int = 1024,
        stats: BatchStats | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.name = name
        self._run = run
        self._width = width
        self.max_batch_size = max_batch_size
        self._delay_s = max_queue_delay_ms / 1000.0
        self.max_queue_items = max_queue_items
        self._stats = stats or BatchStats()
        self._pending: list[_Item] = []
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"noa-model-{name}")
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # Seconds per item, smoothed: sizes the Retry-After of a refusal.
        self._item_s = 0.01

    @property
    def depth(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._loop(), name=f"noa-batcher-{self.name}"
        )

    async def submit(
        self,
        items: Sequence[Tokenized],
        *,
        normalize: bool,
        timeout_s: float,
        cancelled: asyncio.Event | None = None,
    ) -> NDArray[np.float32]:
        """Embeddings of ``items`` in order, computed in one or more batches.

        Raises :class:`QueueFull` at once when the queue cannot take them, and
        :class:`RequestTimedOut` when they are not done within ``timeout_s``. Setting
        ``cancelled`` (the client went away) drops what has not been computed.
        """
        if self._closed:
            raise ModelNotReady(self.name, "unloading")
        if not items:
            return np.empty((0, self._width), np.float32)
        if len(self._pending) + len(items) > self.max_queue_items:
            raise QueueFull(self.name, self._retry_after_s())
        loop = asyncio.get_running_loop()
        request = _Request(len(items), self._width, normalize, loop)
        now = time.monotonic()
        self._pending.extend(_Item(request, i, t, now) for i, t in enumerate(items))
        self._stats.queue_depth(len(self._pending))
        self._wake.set()
        watcher = None
        if cancelled is not None:
            watcher = loop.create_task(cancelled.wait())
            watcher.add_done_callback(lambda task: _client_gone(task, request))
        try:
            return await asyncio.wait_for(asyncio.shield(request.future), timeout_s)
        except TimeoutError:
            raise RequestTimedOut(self.name, timeout_s * 1000.0) from None
        finally:
            request.cancelled = True  # a no-op when done; drops leftovers otherwise
            if watcher is not None:
                watcher.cancel()

    def _retry_after_s(self) -> int:
        return max(1, math.ceil(len(self._pending) * self._item_s))

    def _cut(self) -> list[_Item]:
        """Take the next batch off the queue, dropping cancelled items."""
        live = [item for item in self._pending if not item.request.cancelled]
        if len(live) <= self.max_batch_size:
            batch, rest = live, []
        else:
            anchor = live[0].length
            # Oldest first among equals: sorted() is stable and ``live`` is in arrival order.
            ranked = sorted(range(len(live)), key=lambda i: abs(live[i].length - anchor))
            chosen = set(ranked[: self.max_batch_size])
            batch = [live[i] for i in sorted(chosen)]
            rest = [live[i] for i in range(len(live)) if i not in chosen]
        self._pending = rest
        self._stats.queue_depth(len(rest))
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            # Give concurrent requests the queue delay to join, unless a batch is full.
            deadline = self._pending[0].arrived + self._delay_s
            while len(self._pending) < self.max_batch_size and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except TimeoutError:
                    break
            if self._closed:
                break
            batch = self._cut()
            if batch:
                await self._compute(loop, batch)

    async def _compute(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        self._stats.batch(len(batch))
        # Requests share a normalisation setting per batch only when they agree.
        groups: dict[bool, list[_Item]] = {}
        for item in batch:
            groups.setdefault(item.request.normalize, []).append(item)
        started = time.perf_counter()
        for normalize, items in groups.items():
            tokens = [item.tokens for item in items]
            try:
                rows = await loop.run_in_executor(self._executor, self._run, tokens, normalize)
            except Exception as exc:  # a kernel failure fails the requests, not the loop
                for item in items:
                    _fail(item.request, exc)
                continue
            for item, row in zip(items, rows, strict=True):
                request = item.request
                request.output[item.index] = row
                request.remaining -= 1
                if request.remaining == 0 and not request.future.done():
                    request.future.set_result(request.output)
        elapsed = time.perf_counter() - started
        self._item_s = 0.8 * self._item_s + 0.2 * (elapsed / len(batch))

    async def close(self) -> None:
        """Stop taking work; let the running batch finish; fail what is still queued."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task
        for item in self._pending:
            _fail(item.request, ModelNotReady(self.name, "unloading"))
        self._pending = []
        self._stats.queue_depth(0)
        self._executor.shutdown(wait=False)
