"""``/ws/stream``: requests and their answers over one WebSocket, several in flight.

A request frame ``{"type":"embed","id":..., ...}`` carries the body of the REST
request of that type (the frame less ``type`` and ``id``) and is answered by frames
carrying the same ``id``: zero or more ``{"type":"partial","id",...}`` (for operations
that stream, such as LLM tokens later), then exactly one final frame,
``{"type":"result","id","result"}`` with the REST answer or
``{"type":"error","id","status","code","message"}``. Answers come in the order they
finish, not the order asked. ``{"type":"cancel","id"}`` cancels one (answered with an
error frame, code ``cancelled``).

Each operation is served by its REST route (:mod:`.subrequest`), so adding one is a
line in :data:`OPERATIONS`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
from litestar import Litestar, WebSocket, websocket
from noa.builtin_plugins.streaming.frames import FrameError, Head, encode, error_frame
from noa.builtin_plugins.streaming.gate import Gate
from noa.builtin_plugins.streaming.service import STREAM_SCOPE, Streaming
from noa.builtin_plugins.streaming.session import Session
from noa.builtin_plugins.streaming.subrequest import Answer, call_route

__all__ = ["OPERATIONS", "Operation", "stream_socket"]

log = logging.getLogger("noa.streaming")

_MAX_ID = 128


class Operation(msgspec.Struct, frozen=True):
    """A request type of ``/ws/stream``: the REST route that serves it."""

    method: str
    path: str


#: Frame type -> the REST route serving it (its scope and limits apply per request).
OPERATIONS: dict[str, Operation] = {
    "embed": Operation("POST", "/v1/embed"),
    "infer": Operation("POST", "/v1/infer"),
}
_CONTROL = ("cancel",)


class _RestError(msgspec.Struct):
    """The standard error body: ``{"error": {"message", "code", ...}}``."""

    error: dict[str, Any] = msgspec.field(default_factory=dict)


_rest_error = msgspec.json.Decoder(_RestError)


class StreamChannel:
    __slots__ = ("app", "in_flight", "service", "session")

    def __init__(self, service: Streaming, session: Session, app: Litestar) -> None:
        self.service = service
        self.session = session
        self.app = app
        self.in_flight: dict[str | int, asyncio.Task[None]] = {}

    async def handle(self, head: Head, data: dict[str, Any]) -> None:
        operation = OPERATIONS.get(head.type)
        if operation is None and head.type not in _CONTROL:
            known = ", ".join([*OPERATIONS, *_CONTROL, "ping", "pong"])
            raise FrameError(
                "unknown_type",
                f"unknown frame type {head.type[:100]!r}: /ws/stream takes {known}",
                head.id,
            )
        frame_id = head.id
        if frame_id is None or (isinstance(frame_id, str) and not 0 < len(frame_id) <= _MAX_ID):
            raise FrameError(
                "bad_frame", f"a {head.type} frame needs an 'id' (a string of 1 to 128 or an int)"
            )
        if operation is None:  # cancel
            task = self.in_flight.get(frame_id)
            if task is None:
                raise FrameError("not_in_flight", f"no request {frame_id!r} is in flight", frame_id)
            task.cancel()
            return
        if frame_id in self.in_flight:
            raise FrameError("duplicate_id", f"request {frame_id!r} is still in flight", frame_id)
        limit = self.service.config.max_in_flight
        if len(self.in_flight) >= limit:
            raise FrameError(
                "too_many_in_flight",
                f"{limit} requests are in flight on this connection; wait for an answer",
                frame_id,
                status=429,
            )
        body = {k: v for k, v in data.items() if k not in ("type", "id")}
        task = asyncio.create_task(self._run(operation, frame_id, encode(body)))
        self.in_flight[frame_id] = task

    async def _run(self, operation: Operation, frame_id: str | int, body: bytes) -> None:
        outbox = self.session.outbox
        timeout_s = self.service.config.request_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                answer = await call_route(
                    self.app,
                    self.session.socket.scope,
                    method=operation.method,
                    path=operation.path,
                    body=body,
                    headers=self.session.headers,
                    request_id=f"{self.session.name}#{frame_id}",
                )
            outbox.reply(_final(frame_id, answer))
        except TimeoutError:
            outbox.reply(
                error_frame("timeout", f"no answer within {timeout_s:g} s", frame_id, status=504)
            )
        except asyncio.CancelledError:
            outbox.reply(error_frame("cancelled", "cancelled by the client", frame_id, status=499))
        except Exception:
            log.exception("streaming: request %s on %s failed", frame_id, self.session.name)
            outbox.reply(
                error_frame("internal_error", "internal server error", frame_id, status=500)
            )
        finally:
            self.in_flight.pop(frame_id, None)

    async def closed(self) -> None:
        tasks = list(self.in_flight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _final(frame_id: str | int, answer: Answer) -> str:
    ident = encode(frame_id).decode()
    if answer.status < 400 and answer.content_type.startswith("application/json"):
        body = answer.body.decode() or "null"
        return f'{{"type":"result","id":{ident},"status":{answer.status},"result":{body}}}'
    try:
        error = _rest_error.decode(answer.body).error
    except msgspec.DecodeError:
        error = {}
    return error_frame(
        str(error.get("code") or "error"),
        str(error.get("message") or f"the route answered {answer.status}"),
        frame_id,
        status=answer.status,
    )


def stream_socket(service: Streaming) -> Any:
    gate = Gate(service.policy, group="stream", scope=STREAM_SCOPE)

    @websocket("/ws/stream")
    async def stream(socket: WebSocket[Any, Any, Any]) -> None:
        """Embedding and inference requests over a WebSocket (docs/streaming.md)."""
        app = Litestar.from_scope(socket.scope)
        session = Session(socket, service.sessions, gate)
        await session.run(lambda s: StreamChannel(service, s, app))

    return stream
