"""One WebSocket connection from handshake to close, the same for every endpoint.

The session accepts (or turns away) the connection, authenticates it
(:mod:`~noa.builtin_plugins.streaming.gate`), then runs three tasks until one of them
ends it: the *receiver* reads frames and hands them to the endpoint's channel, the
*sender* writes what waits in the :class:`~noa.builtin_plugins.streaming.outbox.Outbox`,
and the *heartbeat* sends pings and closes an idle connection. A frame the client gets
wrong is answered with an error frame; an unexpected fault in the server is logged with
the connection's id and closes with 1011, never a traceback to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from litestar.connection import WebSocket
from noa.builtin_plugins.streaming.config import StreamingConfig
from noa.builtin_plugins.streaming.frames import (
    Close,
    FrameError,
    Head,
    decode_frame,
    error_frame,
    ping_frame,
    reply,
)
from noa.builtin_plugins.streaming.gate import (
    Gate,
    credential_headers,
    has_credential_header,
    offered,
)
from noa.builtin_plugins.streaming.outbox import Outbox
from noa.builtin_plugins.streaming.telemetry import Telemetry
from noa.plugin_sdk.auth import Principal
from noa.plugin_sdk.errors import (
    ApiError,
    Forbidden,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
)

__all__ = ["Channel", "Session", "Sessions"]

log = logging.getLogger("noa.streaming")

# How long a close frame may take to go out to a client that stopped reading.
_CLOSE_WAIT_S = 1.0
# Longest close reason: the protocol allows 123 bytes.
_REASON_BYTES = 120


class Channel(Protocol):
    """What an endpoint does with one authenticated connection's frames."""

    async def handle(self, head: Head, data: dict[str, Any]) -> None:
        """Act on one frame (not ``ping``, ``pong`` or ``auth``, which the session
        answers); raise :class:`FrameError` to answer it with an error frame."""
        ...

    async def closed(self) -> None:
        """The connection ended: release what the channel holds."""
        ...


class Sessions:
    """The WebSockets of this process: the connection bound, and closing them all."""

    __slots__ = ("config", "live", "telemetry")

    def __init__(self, config: StreamingConfig, telemetry: Telemetry) -> None:
        self.config = config
        self.telemetry = telemetry
        self.live: set[Session] = set()

    async def close_all(self, code: Close, reason: str) -> None:
        await asyncio.gather(
            *(s.close(code, reason) for s in list(self.live)), return_exceptions=True
        )


def _reason(message: str, limit: int = _REASON_BYTES) -> str:
    raw = message.encode()[:limit]
    return raw.decode("utf-8", "ignore")


def _close_code(exc: ApiError) -> Close:
    if isinstance(exc, Unauthorized):
        return Close.UNAUTHORIZED
    if isinstance(exc, Forbidden):
        return Close.FORBIDDEN
    if isinstance(exc, TooManyRequests):
        return Close.RATE_LIMITED
    if isinstance(exc, ServiceUnavailable):
        return Close.TRY_AGAIN_LATER
    return Close.INTERNAL


class Session:
    __slots__ = (
        "_closed",
        "_done",
        "_last_seen",
        "_receiver",
        "endpoint",
        "gate",
        "headers",
        "name",
        "outbox",
        "principal",
        "sessions",
        "socket",
    )

    def __init__(self, socket: WebSocket[Any, Any, Any], sessions: Sessions, gate: Gate) -> None:
        config = sessions.config
        self.socket = socket
        self.sessions = sessions
        self.gate = gate
        self.endpoint = gate.group
        client = socket.scope.get("client")
        self.name = f"{self.endpoint}:{client[0]}:{client[1]}" if client else self.endpoint
        dropped = sessions.telemetry.dropped(self.endpoint)
        self.outbox = Outbox(
            config.send_buffer,
            close_on_overflow=config.slow_consumer == "close",
            on_drop=dropped.inc,
        )
        self.principal: Principal | None = None
        # What the policy saw at connect: requests made on the connection's behalf
        # present the same credential.
        self.headers: list[tuple[bytes, bytes]] = []
        self._done = asyncio.Event()
        self._closed = False
        self._last_seen = time.monotonic()
        self._receiver: asyncio.Task[None] | None = None

    # -- the life of a connection --------------------------------------------------------

    async def run(self, open_channel: Callable[[Session], Channel]) -> None:
        sessions, telemetry = self.sessions, self.sessions.telemetry
        protocol, credential = offered(self.socket.scope)
        await self.socket.accept(subprotocols=protocol)
        if len(sessions.live) >= sessions.config.max_connections:
            telemetry.refused(self.endpoint, "capacity")
            await self.close(Close.TRY_AGAIN_LATER, "the server is at its WebSocket limit")
            return
        sessions.live.add(self)
        telemetry.connected(self.endpoint, +1)
        channel: Channel | None = None
        try:
            first = await self._authenticate(credential)
            if self._closed:
                return
            channel = open_channel(self)
            self._receiver = asyncio.create_task(
                self._receive(channel, first), name=f"ws-in {self.name}"
            )
            tasks = [
                self._receiver,
                asyncio.create_task(self._send(), name=f"ws-out {self.name}"),
                asyncio.create_task(self._heartbeat(), name=f"ws-ping {self.name}"),
            ]
            try:
                await self._done.wait()
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            sessions.live.discard(self)
            telemetry.connected(self.endpoint, -1)
            if channel is not None:
                try:
                    await channel.closed()
                except Exception:
                    log.exception("streaming: cleaning up %s failed", self.name)

    async def close(self, code: Close, reason: str) -> None:
        """Close with ``code`` (once); the session's tasks then end."""
        if self._closed:
            return
        self._closed = True
        receiver = self._receiver
        if receiver is not None and receiver is not asyncio.current_task():
            # granian does not send a close frame while a receive() is pending.
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
        message = {"type": "websocket.close", "code": int(code), "reason": _reason(reason)}
        try:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.socket.send(message), _CLOSE_WAIT_S)  # type: ignore[arg-type]
        finally:
            # Only now: the session's tasks (maybe the caller) are cancelled once set.
            self._done.set()
        log.debug("streaming: closed %s with %d (%s)", self.name, code, reason)

    def _gone(self) -> None:
        """The client closed or the transport failed: nothing more to send."""
        self._closed = True
        self._done.set()

    # -- authentication ------------------------------------------------------------------

    async def _authenticate(self, credential: str | None) -> tuple[Head, dict[str, Any]] | None:
        """Authorize the connection; returns a first frame that was not ``auth``, to be
        handled once the channel is open."""
        scope = self.socket.scope
        first: tuple[Head, dict[str, Any]] | None = None
        late: str | None = None  # an error frame about the first frame, sent after "ready"
        if credential is None and not has_credential_header(scope):
            message = await self._first_message()
            if self._closed:
                return None
            text = None if message is None else message.get("text")
            if message is not None and text is None:
                late = error_frame("binary_frame", "frames are JSON text")
            elif text is not None:
                try:
                    head, data = decode_frame(text)
                except FrameError as exc:
                    late = error_frame(exc.code, exc.message)
                else:
                    if head.type != "auth":
                        first = (head, data)  # handled once the connection is authorized
                    elif isinstance(data.get("token"), str) and data["token"]:
                        credential = data["token"]
                    else:
                        bad = "the auth frame needs a 'token' string"
                        await self._refuse(Unauthorized(bad, code="bad_frame"))
                        return None
        self.headers = credential_headers(scope, credential)
        try:
            grant = await self.gate.authorize(scope, self.headers)
        except ApiError as exc:
            await self._refuse(exc)
            return None
        self.principal = grant.principal
        config = self.sessions.config
        self.outbox.reply(
            reply(
                "ready",
                subject=grant.principal.subject,
                ping_interval_s=config.ping_interval_s,
                idle_timeout_s=config.idle_timeout_s,
                max_frame_bytes=config.max_frame_bytes,
            )
        )
        if late is not None:
            self.outbox.reply(late)
        return first

    async def _first_message(self) -> dict[str, Any] | None:
        """The first frame's message, if one comes within ``auth_timeout_s``; closes the
        connection when it is too large, notes when the client went away."""
        try:
            async with asyncio.timeout(self.sessions.config.auth_timeout_s):
                message: dict[str, Any] = await self.socket.receive()  # type: ignore[assignment]
        except TimeoutError:
            return None
        if message["type"] == "websocket.disconnect":
            self._gone()
            return None
        self._last_seen = time.monotonic()
        self.sessions.telemetry.frames(self.endpoint, "in", 1)
        if not self._fits(message.get("text") or message.get("bytes") or ""):
            await self._too_large()
            return None
        return message

    def _fits(self, data: str | bytes) -> bool:
        limit = self.sessions.config.max_frame_bytes
        if len(data) > limit:
            return False
        # A character takes up to four bytes: count them only when that could matter.
        return isinstance(data, bytes) or len(data) * 4 <= limit or len(data.encode()) <= limit

    async def _too_large(self) -> None:
        limit = self.sessions.config.max_frame_bytes
        await self.close(Close.TOO_LARGE, f"a frame may be {limit} bytes at most")

    async def _refuse(self, exc: ApiError) -> None:
        code = _close_code(exc)
        self.sessions.telemetry.refused(self.endpoint, exc.code or code.name.lower())
        reason = exc.message
        retry = exc.headers.get("Retry-After")
        if retry:  # kept whole: the message is cut to make room for it
            suffix = f" (retry after {retry} s)"
            reason = _reason(reason, _REASON_BYTES - len(suffix.encode())) + suffix
        frame = error_frame(exc.code or "refused", exc.message, status=exc.status_code)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self.socket.send({"type": "websocket.send", "text": frame}),  # type: ignore[arg-type]
                _CLOSE_WAIT_S,
            )
        await self.close(code, reason)

    # -- the three tasks -----------------------------------------------------------------

    async def _receive(self, channel: Channel, first: tuple[Head, dict[str, Any]] | None) -> None:
        try:
            if first is not None:
                await self._dispatch(channel, *first)
            while not self._closed:
                message = await self.socket.receive()
                if message["type"] == "websocket.disconnect":
                    self._gone()
                    return
                self._last_seen = time.monotonic()
                self.sessions.telemetry.frames(self.endpoint, "in", 1)
                await self._frame(channel, message)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("streaming: reading from %s failed", self.name)
            await self.close(Close.INTERNAL, "internal error")

    async def _frame(self, channel: Channel, message: dict[str, Any]) -> None:
        text = message.get("text")
        if not self._fits(text or message.get("bytes") or ""):
            await self._too_large()
            return
        if text is None:
            self.outbox.reply(
                error_frame("binary_frame", "frames are JSON text; binary frames are not read")
            )
            return
        try:
            head, data = decode_frame(text)
        except FrameError as exc:
            self.outbox.reply(error_frame(exc.code, exc.message))
            return
        await self._dispatch(channel, head, data)

    async def _dispatch(self, channel: Channel, head: Head, data: dict[str, Any]) -> None:
        if head.type == "pong":
            return
        if head.type == "ping":
            self.outbox.reply(reply("pong", head.id))
            return
        if head.type == "auth":
            self.outbox.reply(
                error_frame(
                    "already_authenticated",
                    "the connection is authenticated; auth is only a first frame",
                    head.id,
                )
            )
            return
        try:
            await channel.handle(head, data)
        except FrameError as exc:
            frame_id = exc.frame_id if exc.frame_id is not None else head.id
            self.outbox.reply(error_frame(exc.code, exc.message, frame_id, **exc.extra))

    async def _send(self) -> None:
        outbox, send = self.outbox, self.socket.send
        counter = self.sessions.telemetry.frames_counter(self.endpoint, "out")
        try:
            while True:
                await outbox.wait()
                if outbox.overflowed:
                    log.warning(
                        "streaming: %s reads too slowly (%d events waiting); closing it",
                        self.name,
                        self.sessions.config.send_buffer,
                    )
                    await self.close(Close.SLOW_CONSUMER, "slow consumer: the send buffer is full")
                    return
                frames = outbox.take()
                for frame in frames:
                    await send({"type": "websocket.send", "text": frame})  # type: ignore[arg-type]
                counter.inc(len(frames))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client went away mid-send
            log.debug("streaming: sending to %s failed: %s", self.name, exc)
            self._gone()

    async def _heartbeat(self) -> None:
        config = self.sessions.config
        last_ping = time.monotonic()
        while True:
            now = time.monotonic()
            idle_at = self._last_seen + config.idle_timeout_s
            if now >= idle_at:
                await self.close(
                    Close.IDLE, f"idle: no frame from the client in {config.idle_timeout_s:g} s"
                )
                return
            ping_at = last_ping + config.ping_interval_s
            if now >= ping_at:
                self.outbox.reply(ping_frame())
                last_ping = now
                continue
            await asyncio.sleep(min(idle_at, ping_at) - now)
