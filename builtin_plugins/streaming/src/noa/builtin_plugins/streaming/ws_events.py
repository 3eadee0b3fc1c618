"""``/ws/events``: follow event topics over one WebSocket.

``{"type":"subscribe","topic":"tasks.<id>"}`` answers ``{"type":"subscribed","topic"}``
once the topic's broker subscription is live; from then on every event on it arrives as
``{"type":"event","topic","seq","event"}``, ``seq`` counting the connection's events
from 1. ``{"type":"unsubscribe","topic"}`` answers ``{"type":"unsubscribed","topic"}``.
A topic the credential has no scope for, an unknown one or one too many is answered
with an error frame; the connection and its other topics carry on.
"""

from __future__ import annotations

from typing import Any

from litestar import WebSocket, websocket
from noa.builtin_plugins.streaming.frames import FrameError, Head, reply
from noa.builtin_plugins.streaming.gate import Gate
from noa.builtin_plugins.streaming.service import EVENTS_SCOPE, Streaming, frame_error
from noa.builtin_plugins.streaming.session import Session
from noa.builtin_plugins.streaming.topics import Topic
from noa.plugin_sdk.errors import ApiError

__all__ = ["events_socket"]


class EventsChannel:
    __slots__ = ("service", "session", "topics")

    def __init__(self, service: Streaming, session: Session) -> None:
        self.service = service
        self.session = session
        self.topics: dict[str, Topic] = {}

    async def handle(self, head: Head, data: dict[str, Any]) -> None:
        if head.type == "subscribe":
            await self._subscribe(head, data.get("topic"))
        elif head.type == "unsubscribe":
            await self._unsubscribe(head, data.get("topic"))
        else:
            raise FrameError(
                "unknown_type",
                f"unknown frame type {head.type[:100]!r}: /ws/events takes subscribe, "
                "unsubscribe, ping and pong",
                head.id,
            )

    async def _subscribe(self, head: Head, name: object) -> None:
        outbox = self.session.outbox
        try:
            topic = self.service.topic(name, self.session.principal)
        except ApiError as exc:
            raise frame_error(exc, head.id, topic=_name(name)) from None
        if topic.name not in self.topics:
            if len(self.topics) >= self.service.config.max_subscriptions:
                raise FrameError(
                    "too_many_subscriptions",
                    f"a connection may follow {self.service.config.max_subscriptions} "
                    "topics at most; unsubscribe from one first",
                    head.id,
                    topic=topic.name,
                )
            assert self.service.hub is not None  # service.topic() checked
            await self.service.hub.add(topic, outbox)
            self.topics[topic.name] = topic
        outbox.reply(reply("subscribed", head.id, topic=topic.name))

    async def _unsubscribe(self, head: Head, name: object) -> None:
        topic = self.topics.pop(name, None) if isinstance(name, str) else None
        if topic is None:
            raise FrameError(
                "not_subscribed",
                f"not subscribed to {str(name)[:200]!r}",
                head.id,
                topic=_name(name),
            )
        assert self.service.hub is not None
        await self.service.hub.remove(topic, self.session.outbox)
        self.session.outbox.forget(topic.name)
        self.session.outbox.reply(reply("unsubscribed", head.id, topic=topic.name))

    async def closed(self) -> None:
        hub, topics = self.service.hub, list(self.topics.values())
        self.topics.clear()
        if hub is not None:
            for topic in topics:
                await hub.remove(topic, self.session.outbox)


def _name(name: object) -> str | None:
    return name[:200] if isinstance(name, str) else None


def events_socket(service: Streaming) -> Any:
    gate = Gate(service.policy, group="events", scope=EVENTS_SCOPE)

    @websocket("/ws/events", opt={})
    async def events(socket: WebSocket[Any, Any, Any]) -> None:
        """Event topics over a WebSocket (docs/streaming.md)."""
        session = Session(socket, service.sessions, gate)
        await session.run(lambda s: EventsChannel(service, s))

    return events
