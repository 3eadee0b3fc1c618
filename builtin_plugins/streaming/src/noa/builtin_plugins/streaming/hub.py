"""One broker subscription per subject per process, shared by every local client.

A thousand clients following one topic cost one subscription on the broker (one NATS
interest, one in-process subscriber); each message is turned into JSON text once and
handed to every client's :class:`~noa.builtin_plugins.streaming.outbox.Outbox` without
blocking, so a slow client never holds up the others or the broker. The broker
subscription is live before :meth:`Hub.add` returns (a client told "subscribed" misses
nothing published after), and is dropped with the last client following it.
"""

from __future__ import annotations

import asyncio
import logging

from noa.builtin_plugins.streaming.frames import event_json
from noa.builtin_plugins.streaming.outbox import Outbox
from noa.builtin_plugins.streaming.topics import Topic
from noa.plugin_sdk.ports.broker import BrokerPort, Message, MessageHandler, Subscription

__all__ = ["Hub"]

log = logging.getLogger("noa.streaming")


class _Entry:
    __slots__ = ("sinks", "subscription", "topic")

    def __init__(self, topic: str) -> None:
        self.topic = topic
        # Insertion-ordered set: clients get a message in the order they subscribed.
        self.sinks: dict[Outbox, None] = {}
        self.subscription: Subscription | None = None


class Hub:
    __slots__ = ("_broker", "_entries", "_lock")

    def __init__(self, broker: BrokerPort) -> None:
        self._broker = broker
        self._entries: dict[str, _Entry] = {}
        self._lock = asyncio.Lock()

    def followers(self, topic: Topic) -> int:
        entry = self._entries.get(topic.subject)
        return len(entry.sinks) if entry is not None else 0

    async def add(self, topic: Topic, sink: Outbox) -> None:
        """Deliver ``topic``'s events to ``sink`` from now on. Raises what the broker
        raises when it cannot subscribe (nothing is left half done)."""
        async with self._lock:
            entry = self._entries.get(topic.subject)
            if entry is None:
                entry = _Entry(topic.name)
                entry.subscription = await self._broker.subscribe(
                    topic.subject, self._deliverer(entry)
                )
                self._entries[topic.subject] = entry
            entry.sinks[sink] = None

    async def remove(self, topic: Topic, sink: Outbox) -> None:
        async with self._lock:
            entry = self._entries.get(topic.subject)
            if entry is None or sink not in entry.sinks:
                return
            del entry.sinks[sink]
            if not entry.sinks:
                del self._entries[topic.subject]
                if entry.subscription is not None:
                    await entry.subscription.unsubscribe()

    async def close(self) -> None:
        async with self._lock:
            entries, self._entries = list(self._entries.values()), {}
            for entry in entries:
                if entry.subscription is not None:
                    await entry.subscription.unsubscribe()

    @staticmethod
    def _deliverer(entry: _Entry) -> MessageHandler:
        async def deliver(message: Message) -> None:
            if not entry.sinks:
                return
            event = event_json(message.payload)
            topic = entry.topic
            for sink in tuple(entry.sinks):
                sink.event(topic, event)

        return deliver
