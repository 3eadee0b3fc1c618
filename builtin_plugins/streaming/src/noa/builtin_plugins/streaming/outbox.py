"""What waits to be sent to one client: replies, then events, in a bounded buffer.

Two lanes: *replies* (answers to the client's own frames, pings, results) are never
dropped, since the client is waiting for them; *events* from the bus are bounded by
``send_buffer``. When a client reads more slowly than events arrive, the send to it
blocks (TCP backpressure) and events pile up here. At the bound the policy applies:
``drop_oldest`` drops the oldest waiting event and the next frame the client gets is
``{"type":"gap","dropped":N}``; ``close`` marks the outbox overflowed, and the
connection closes. Replies are bounded too (a client that sends requests but never
reads), at the same size plus a margin; past that the outbox overflows whatever the
policy.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from noa.builtin_plugins.streaming.frames import event_frame, event_prefix, gap_frame

__all__ = ["Outbox"]

# Replies allowed past the event bound before a client that never reads is dropped.
_REPLY_MARGIN = 64
# Frames taken to send at once: few enough that drops happen here, not in a batch.
_BATCH = 32


class Outbox:
    __slots__ = (
        "_dropped",
        "_events",
        "_prefixes",
        "_ready",
        "_replies",
        "close_on_overflow",
        "limit",
        "on_drop",
        "overflowed",
        "seq",
    )

    def __init__(
        self,
        limit: int,
        *,
        close_on_overflow: bool,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self.limit = limit
        self.close_on_overflow = close_on_overflow
        self.on_drop = on_drop
        self.overflowed = False
        self.seq = 0
        self._events: deque[str] = deque()
        self._replies: deque[str] = deque()
        self._dropped = 0
        self._ready = asyncio.Event()
        self._prefixes: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._events) + len(self._replies)

    def reply(self, frame: str) -> None:
        if len(self._replies) >= self.limit + _REPLY_MARGIN:
            self._overflow()
            return
        self._replies.append(frame)
        self._ready.set()

    def event(self, topic: str, event: str) -> None:
        """Queue one event of ``topic`` (JSON text); never blocks."""
        if self.overflowed:
            return
        self.seq += 1
        prefix = self._prefixes.get(topic)
        if prefix is None:
            prefix = self._prefixes[topic] = event_prefix(topic)
        if len(self._events) >= self.limit:
            if self.close_on_overflow:
                self._overflow()
                return
            self._events.popleft()
            self._dropped += 1
            if self.on_drop is not None:
                self.on_drop(1)
        self._events.append(event_frame(prefix, self.seq, event))
        self._ready.set()

    def forget(self, topic: str) -> None:
        self._prefixes.pop(topic, None)

    def _overflow(self) -> None:
        self.overflowed = True
        self._events.clear()
        self._replies.clear()
        self._ready.set()

    def take(self, most: int = _BATCH) -> list[str]:
        """Up to ``most`` waiting frames, replies first, a gap marker before the events
        that follow a drop; empty when nothing waits (or the outbox overflowed)."""
        if self.overflowed:
            return []
        frames: list[str] = []
        replies, events = self._replies, self._events
        while replies and len(frames) < most:
            frames.append(replies.popleft())
        if self._dropped and len(frames) < most:
            frames.append(gap_frame(self._dropped))
            self._dropped = 0
        while events and len(frames) < most:
            frames.append(events.popleft())
        if not (replies or events or self._dropped):
            self._ready.clear()
        return frames

    async def wait(self) -> None:
        """Until something waits to be sent (or the outbox overflowed)."""
        if not (self._replies or self._events or self._dropped or self.overflowed):
            await self._ready.wait()
