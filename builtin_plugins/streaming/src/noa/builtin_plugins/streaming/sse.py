"""``GET /v1/events?topic=...``: the event topics as Server-Sent Events.

An ordinary HTTP route: the HTTP core's access check asks for ``events:subscribe``
before the handler runs, then the handler checks each topic's own scope against the
principal the check established (403 naming the topic). The stream starts with
``event: ready`` (the topics are live), then carries the same JSON as the WebSocket's
frames: ``event: event`` (``{"type":"event","topic","seq","event"}``) and
``event: gap`` (``{"type":"gap","dropped"}``), with ``id:`` set to ``seq``. Comment lines
every ``sse_heartbeat_s`` keep it open through proxies.

The HTTP core keeps an event stream open past ``http.request_timeout_s`` (up to
``http.max_event_streams`` per worker; past that it ends at the timeout). With
``sse_max_s`` set, a stream ends after that long with a comment and a ``retry:`` hint;
``EventSource`` reconnects on its own, and sends ``Last-Event-ID`` back, which only
says where it was: events published while it was away are not replayed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from litestar import Request, get
from litestar.params import Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from noa.builtin_plugins.streaming.frames import encode
from noa.builtin_plugins.streaming.outbox import Outbox
from noa.builtin_plugins.streaming.service import Streaming
from noa.builtin_plugins.streaming.topics import Topic
from noa.plugin_sdk.auth import PRINCIPAL_STATE_KEY
from noa.plugin_sdk.errors import BadRequest

__all__ = ["sse_handler"]

# What EventSource waits before reconnecting after the server ended a stream, in ms.
_RETRY_MS = 500
_EVENT = '{"type":"event","topic":'
_SEQ = '"seq":'


def sse_handler(service: Streaming) -> Any:
    config = service.config

    @get("/v1/events", summary="Follow event topics (Server-Sent Events)", tags=["streaming"])
    async def events(
        request: Request[Any, Any, Any],
        topic: Annotated[list[str], Parameter(query="topic", min_items=1)],
    ) -> ServerSentEvent:
        """``text/event-stream`` of one or more topics (``?topic=tasks.<id>&topic=models``):
        ``event: ready``, then ``event: event`` frames (topic, per-stream ``seq``, the
        event) and ``event: gap`` when a slow reader lost some. 400 for an unknown
        topic, 403 for a topic whose scope the credential lacks, 503 without a broker.
        See docs/streaming.md."""
        names = list(dict.fromkeys(topic))
        if len(names) > config.max_subscriptions:
            raise BadRequest(
                f"{config.max_subscriptions} topics at most per stream",
                code="too_many_subscriptions",
                param="topic",
            )
        principal = request.scope["state"].get(PRINCIPAL_STATE_KEY)
        topics = [service.topic(name, principal) for name in names]
        hub = service.hub
        assert hub is not None  # service.topic() checked
        outbox = Outbox(
            config.send_buffer,
            close_on_overflow=config.slow_consumer == "close",
            on_drop=service.telemetry.dropped("sse").inc,
        )
        added: list[Topic] = []
        try:
            for one in topics:
                await hub.add(one, outbox)
                added.append(one)
        except BaseException:
            for one in added:
                await hub.remove(one, outbox)
            raise
        return ServerSentEvent(_stream(service, outbox, added))

    return events


async def _stream(
    service: Streaming, outbox: Outbox, topics: list[Topic]
) -> AsyncIterator[ServerSentEventMessage]:
    config, telemetry = service.config, service.telemetry
    sent = telemetry.frames_counter("sse", "out")
    limit = config.sse_max_s
    deadline = None if not limit else time.monotonic() + limit
    telemetry.connected("sse", +1)
    try:
        ready = encode({"type": "ready", "topics": [t.name for t in topics]}).decode()
        yield ServerSentEventMessage(data=ready, event="ready")
        while True:
            wait = config.sse_heartbeat_s
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    yield ServerSentEventMessage(
                        data=None, comment="stream time limit; reconnect", retry=_RETRY_MS
                    )
                    return
                wait = min(wait, left)
            try:
                await asyncio.wait_for(outbox.wait(), wait)
            except TimeoutError:
                yield ServerSentEventMessage(data=None, comment="keep-alive")
                continue
            if outbox.overflowed:
                yield ServerSentEventMessage(
                    data=None, comment="slow consumer: the send buffer is full"
                )
                return
            frames = outbox.take()
            for frame in frames:
                if frame.startswith(_EVENT):
                    # Topic names hold no quotes or commas: seq is what follows "seq":.
                    start = frame.index(_SEQ, len(_EVENT)) + len(_SEQ)
                    seq = frame[start : frame.index(",", start)]
                    yield ServerSentEventMessage(data=frame, event="event", id=seq)
                else:
                    yield ServerSentEventMessage(data=frame, event="gap")
            sent.inc(len(frames))
    finally:
        telemetry.connected("sse", -1)
        hub = service.hub
        if hub is not None:
            for one in topics:
                await asyncio.shield(hub.remove(one, outbox))
