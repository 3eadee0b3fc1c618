"""Server-Sent Event streams of one task or workflow, fed by its broker subject.

The stream subscribes first and reads the current state second, so no change falls
between the two (one may arrive twice). It sends the current state, then every event,
a comment line every ``heartbeat_s`` while nothing happens, and ends after a final
state. It also ends before the HTTP core's request timeout would cut it
(``http.request_timeout_s``): a client (``EventSource``) reconnects and gets the
current state first again. A client that goes away ends the generator, which
unsubscribes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
from litestar.response import ServerSentEvent, ServerSentEventMessage
from noa.builtin_plugins.orchestration.events import TaskEvent, WorkflowEvent, is_final
from noa.plugin_sdk.ports.broker import BrokerPort, Message, Subscription

__all__ = ["follow"]

# Events waiting for a slow client past this are dropped (the stream stays live).
_BACKLOG = 1000


async def follow(
    broker: BrokerPort,
    subject: str,
    current: Callable[[], Awaitable[TaskEvent | WorkflowEvent]],
    *,
    kind: str,
    heartbeat_s: float,
    max_s: float | None,
) -> ServerSentEvent:
    """The response streaming ``subject``. ``current`` reads the present state (raising
    ``NotFound`` answers 404 before any stream starts)."""
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
    messages = _messages(subscription, inbox, first, kind, heartbeat_s, max_s)
    return ServerSentEvent(messages)


async def _messages(
    subscription: Subscription,
    inbox: asyncio.Queue[bytes],
    first: TaskEvent | WorkflowEvent,
    kind: str,
    heartbeat_s: float,
    max_s: float | None,
) -> AsyncIterator[ServerSentEventMessage]:
    deadline = None if max_s is None else time.monotonic() + max_s
    try:
        payload = msgspec.json.encode(first)
        yield ServerSentEventMessage(data=payload.decode(), event=first.kind)
        if is_final(payload, kind):
            return
        while True:
            wait = heartbeat_s
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    yield ServerSentEventMessage(data=None, comment="stream time limit; reconnect")
                    return
                wait = min(wait, left)
            try:
                payload = await asyncio.wait_for(inbox.get(), wait)
            except TimeoutError:
                yield ServerSentEventMessage(data=None, comment="keep-alive")
                continue
            event = _kind(payload)
            yield ServerSentEventMessage(data=payload.decode(), event=event)
            if is_final(payload, kind):
                return
    finally:
        await asyncio.shield(subscription.unsubscribe())


class _Kind(msgspec.Struct):
    kind: str = "message"


_kind_of = msgspec.json.Decoder(_Kind)


def _kind(payload: bytes) -> str:
    try:
        return _kind_of.decode(payload).kind
    except msgspec.DecodeError:
        return "message"
