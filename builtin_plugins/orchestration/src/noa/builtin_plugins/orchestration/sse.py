"""Following one task or workflow: its broker subject as a stream of events, for the
Server-Sent Event routes and gRPC's ``WatchTask``.

:func:`watch` subscribes first and reads the current state second, so no change falls
between the two (one may arrive twice). :meth:`Watch.events` yields the current state,
then every event, ``None`` every ``heartbeat_s`` while nothing happens (a stream's
keep-alive), and ends after a final state. Closing it (a client that went away)
unsubscribes. :func:`follow` is the same as a ``text/event-stream`` response; the HTTP
core keeps such a stream open past its request timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

import msgspec
from litestar.response import ServerSentEvent, ServerSentEventMessage
from noa.builtin_plugins.orchestration.events import TaskEvent, WorkflowEvent, is_final
from noa.plugin_sdk.ports.broker import BrokerPort, Message, Subscription

__all__ = ["Watch", "follow", "watch"]

# Events waiting for a slow client past this are dropped (the stream stays live).
_BACKLOG = 1000


class Watch:
    __slots__ = ("_first", "_inbox", "_kind", "_subscription")

    def __init__(
        self,
        subscription: Subscription,
        inbox: asyncio.Queue[bytes],
        first: TaskEvent | WorkflowEvent,
        kind: str,
    ) -> None:
        self._subscription, self._inbox, self._first, self._kind = (
            subscription,
            inbox,
            first,
            kind,
        )

    async def events(self, heartbeat_s: float) -> AsyncGenerator[bytes | None, None]:
        """JSON events, ``None`` after ``heartbeat_s`` without one; ends after a final
        state, or when closed (which unsubscribes)."""
        try:
            payload = msgspec.json.encode(self._first)
            yield payload
            if is_final(payload, self._kind):
                return
            while True:
                try:
                    payload = await asyncio.wait_for(self._inbox.get(), heartbeat_s)
                except TimeoutError:
                    yield None
                    continue
                yield payload
                if is_final(payload, self._kind):
                    return
        finally:
            await asyncio.shield(self._subscription.unsubscribe())


async def watch(
    broker: BrokerPort,
    subject: str,
    current: Callable[[], Awaitable[TaskEvent | WorkflowEvent]],
    *,
    kind: str,
) -> Watch:
    """Follow ``subject``. ``current`` reads the present state; when it raises
    (``NotFound``: a 404 before any stream starts) nothing stays subscribed."""
    inbox: asyncio.Queue[bytes] = asyncio.Queue(_BACKLOG)

    async def received(message: Message) -> None:
        if not inbox.full():
            inbox.put_nowait(message.payload)

    subscription = await broker.subscribe(subject, received)
    try:
        first = await current()
    except BaseException:
        await subscription.unsubscribe()
        raise
    return Watch(subscription, inbox, first, kind)


async def follow(
    broker: BrokerPort,
    subject: str,
    current: Callable[[], Awaitable[TaskEvent | WorkflowEvent]],
    *,
    kind: str,
    heartbeat_s: float,
) -> ServerSentEvent:
    """:func:`watch` as a Server-Sent Event response (``event:`` the payload's kind)."""
    following = await watch(broker, subject, current, kind=kind)
    return ServerSentEvent(_messages(following.events(heartbeat_s)))


async def _messages(
    events: AsyncIterator[bytes | None],
) -> AsyncIterator[ServerSentEventMessage]:
    async for payload in events:
        if payload is None:
            yield ServerSentEventMessage(data=None, comment="keep-alive")
        else:
            yield ServerSentEventMessage(data=payload.decode(), event=_kind(payload))


class _Kind(msgspec.Struct):
    kind: str = "message"


_kind_of = msgspec.json.Decoder(_Kind)


def _kind(payload: bytes) -> str:
    try:
        return _kind_of.decode(payload).kind
    except msgspec.DecodeError:
        return "message"
