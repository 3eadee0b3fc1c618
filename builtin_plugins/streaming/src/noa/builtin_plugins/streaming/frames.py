"""The wire format shared by ``/ws/events`` and ``/ws/stream``: JSON text frames with a
``type``, the close codes, and the frames the server writes.

Every frame a client sends is a JSON object with a string ``type``; an optional ``id``
(a string or an integer) is echoed in the server's answer to it. What the server sends
is built here, so the two endpoints cannot drift apart.
"""

from __future__ import annotations

import time
from enum import IntEnum
from typing import Any

import msgspec

__all__ = [
    "BEARER_PREFIX",
    "PROTOCOL",
    "Close",
    "FrameError",
    "Head",
    "decode_frame",
    "encode",
    "error_frame",
    "event_frame",
    "event_json",
    "event_prefix",
    "gap_frame",
    "ping_frame",
    "reply",
]

# What the handshake's Sec-WebSocket-Protocol offers: the protocol name, which the
# server echoes, and optionally "bearer.<token>" next to it, which it never echoes.
PROTOCOL = "noa.v1"
BEARER_PREFIX = "bearer."


class Close(IntEnum):
    """Close codes the server uses (``reason`` says more)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the server is shutting down
    SLOW_CONSUMER = 1008  # the send buffer overflowed with slow_consumer = "close"
    TOO_LARGE = 1009  # a frame above max_frame_bytes
    INTERNAL = 1011
    TRY_AGAIN_LATER = 1013  # max_connections reached, or the auth backend is down
    UNAUTHORIZED = 4401  # no or bad credentials, or no auth frame within auth_timeout_s
    FORBIDDEN = 4403  # the credential lacks the endpoint's scope
    IDLE = 4408  # nothing received within idle_timeout_s
    RATE_LIMITED = 4429  # the policy's rate limit, at connect


class FrameError(Exception):
    """A frame the server answers with an error frame (the connection stays open)."""

    def __init__(self, code: str, message: str, frame_id: Any = None, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.frame_id = frame_id
        # More fields of the error frame (the topic it is about, the HTTP status).
        self.extra = extra


class Head(msgspec.Struct):
    """What every client frame has: its type and the id to echo."""

    type: str
    id: str | int | None = None


_head = msgspec.json.Decoder(Head)
_any = msgspec.json.Decoder()
encode = msgspec.json.Encoder().encode


def decode_frame(text: str) -> tuple[Head, dict[str, Any]]:
    """The head and the whole object of a text frame; :class:`FrameError` when it is not
    a JSON object with a string ``type``."""
    try:
        data = _any.decode(text)
    except msgspec.DecodeError as exc:
        raise FrameError("bad_json", f"the frame is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise FrameError("bad_frame", "a frame is a JSON object with a string 'type'")
    try:
        head = msgspec.convert(data, Head)
    except msgspec.ValidationError as exc:
        message = f"a frame is a JSON object with a string 'type': {exc}"
        raise FrameError("bad_frame", message) from None
    return head, data


def error_frame(code: str, message: str, frame_id: Any = None, **extra: Any) -> str:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if frame_id is not None:
        frame["id"] = frame_id
    frame.update(extra)
    return encode(frame).decode()


def reply(kind: str, frame_id: Any = None, **fields: Any) -> str:
    frame: dict[str, Any] = {"type": kind}
    if frame_id is not None:
        frame["id"] = frame_id
    frame.update(fields)
    return encode(frame).decode()


def ping_frame() -> str:
    return f'{{"type":"ping","at":{time.time():.3f}}}'


def gap_frame(dropped: int) -> str:
    return f'{{"type":"gap","dropped":{dropped}}}'


def event_prefix(topic: str) -> str:
    """The start of every event frame of ``topic``, up to its sequence number."""
    return '{"type":"event","topic":' + encode(topic).decode() + ',"seq":'


def event_frame(prefix: str, seq: int, event: str) -> str:
    """An event frame: ``prefix`` from :func:`event_prefix`, ``event`` JSON text."""
    return f'{prefix}{seq},"event":{event}}}'


def event_json(payload: bytes) -> str:
    """A broker payload as JSON text to put in event frames: itself when it is JSON,
    else a JSON string of its text (a plugin may publish anything)."""
    try:
        _any.decode(payload)
        return payload.decode()
    except (msgspec.DecodeError, UnicodeDecodeError):
        return encode(payload.decode("utf-8", "replace")).decode()
