"""``MemoryCache``: a bounded in-process LRU cache with per-entry expiry.

It implements :class:`~noa.plugin_sdk.ports.CachePort`. It is the ``memory`` driver of
the cache slot, the first tier of the tiered cache, and the reference driver the SDK's
cache contract is checked against. It needs no event loop of its own; its methods are
``async`` only to match the port.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["MemoryCache"]


class MemoryCache:
    """An in-process cache holding at most ``max_entries`` entries.

    The least recently used entry (read or written) is evicted first. Expiry is measured
    on ``clock`` (monotonic by default, so a wall-clock change cannot expire anything);
    an expired entry is dropped when touched, or evicted in its LRU turn.
    """

    def __init__(
        self, max_entries: int = 10_000, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._clock = clock
        # key -> (value, deadline or None); order is least to most recently used.
        self._entries: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, deadline = entry
        if deadline is not None and deadline <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        if ttl_s is not None and not ttl_s > 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        deadline = None if ttl_s is None else self._clock() + ttl_s
        self._entries[key] = (bytes(value), deadline)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def delete(self, key: str) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        deadline = entry[1]
        return deadline is None or deadline > self._clock()

    async def clear(self) -> None:
        self._entries.clear()

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        """Entries held, expired ones not yet dropped included."""
        return len(self._entries)
