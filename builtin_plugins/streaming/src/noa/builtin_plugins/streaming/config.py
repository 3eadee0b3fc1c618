"""The ``[streaming]`` config section. Every key is described in docs/streaming.md."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from noa.plugin_sdk import PluginConfig

__all__ = ["StreamingConfig"]

Positive = Annotated[float, msgspec.Meta(gt=0)]


class StreamingConfig(PluginConfig, frozen=True):
    # Seconds between the server's {"type":"ping"} frames on an open WebSocket.
    ping_interval_s: Positive = 20.0
    # A WebSocket whose client sent no frame (a pong counts) for this long is closed
    # with code 4408.
    idle_timeout_s: Positive = 60.0
    # A client that brought no credential to the handshake has this long to send its
    # {"type":"auth"} frame (or any other first frame) before the server decides.
    auth_timeout_s: Positive = 5.0
    # The largest frame a client may send, in bytes; a larger one closes with 1009.
    max_frame_bytes: Annotated[int, msgspec.Meta(ge=256)] = 1_048_576
    # Event frames waiting for one slow client (WebSocket or SSE) before the
    # slow_consumer policy applies.
    send_buffer: Annotated[int, msgspec.Meta(ge=1)] = 1000
    # "drop_oldest": drop the oldest waiting events and send {"type":"gap","dropped":N}
    # in their place; "close": close the WebSocket with 1008 (an SSE stream ends).
    slow_consumer: Literal["drop_oldest", "close"] = "drop_oldest"
    # Topics one connection (WebSocket or SSE request) may follow at once.
    max_subscriptions: Annotated[int, msgspec.Meta(ge=1)] = 100
    # WebSockets one server process holds open; more are closed at once with 1013.
    max_connections: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    # Requests one /ws/stream connection may have in flight; more get an error frame.
    max_in_flight: Annotated[int, msgspec.Meta(ge=1)] = 16
    # The longest a /ws/stream request may run before it is answered with a timeout.
    request_timeout_s: Positive = 30.0
    # Seconds between the comment lines that keep an idle SSE stream open.
    sse_heartbeat_s: Positive = 15.0
    # The longest one SSE response lasts (then the client, EventSource, reconnects);
    # 0: no limit of its own (the HTTP core keeps event streams open).
    sse_max_s: Annotated[float, msgspec.Meta(ge=0)] = 0.0
