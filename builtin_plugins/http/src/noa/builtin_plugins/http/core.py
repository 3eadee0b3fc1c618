"""The outermost ASGI layer: request ids, admission control, request timeout, last-resort errors.

Written as plain ASGI, not Litestar middleware, because it runs on every request and
must stay cheap: probes (``/health``, ``/ready``, ``/metrics`` ...) skip admission and
the timeout so an orchestrator can still see a saturated server.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Collection

from noa.builtin_plugins.http.errors import error_body
from noa.plugin_sdk.transport import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RequestCore"]

log = logging.getLogger("noa.http")

_HEADER = b"x-request-id"
_MAX_ID = 128


def _incoming_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == _HEADER:
            return value.decode("ascii") if _id_ok(value) else None
    return None


def _id_ok(value: bytes) -> bool:
    # Letters, digits and - _ . : only, so an id is safe to echo and to log.
    return 0 < len(value) <= _MAX_ID and all(
        48 <= b <= 57 or 65 <= b <= 90 or 97 <= b <= 122 or b in b"-_.:" for b in value
    )


class RequestCore:
    """Wraps the application; one instance per worker."""

    __slots__ = ("app", "in_flight", "max_in_flight", "probe_paths", "retry_after", "timeout_s")

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_in_flight: int,
        timeout_s: float,
        retry_after_s: int,
        probe_paths: Collection[str],
    ) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.retry_after = str(retry_after_s).encode()
        self.probe_paths = frozenset(probe_paths)
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _incoming_id(scope["headers"]) or uuid.uuid4().hex
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state["request_id"] = rid
        id_header = (_HEADER, rid.encode("ascii"))
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        if scope["path"] in self.probe_paths:
            await self.app(scope, receive, send_with_id)
            return
        if self.in_flight >= self.max_in_flight:
            await self._reply(
                send_with_id, 503, "the server is at capacity; retry after the Retry-After delay",
                rid, code="overloaded", extra=((b"retry-after", self.retry_after),),
            )
            return
        self.in_flight += 1
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.app(scope, receive, send_with_id)
        except TimeoutError:
            if not started:
                await self._reply(
                    send_with_id, 504, f"the request took longer than {self.timeout_s:g} s", rid
                )
        except Exception:
            log.exception("unhandled error outside the router (request_id=%s)", rid)
            if not started:
                await self._reply(send_with_id, 500, "internal server error", rid)
        finally:
            self.in_flight -= 1

    @staticmethod
    async def _reply(
        send: Send,
        status: int,
        message: str,
        rid: str,
        *,
        code: str | None = None,
        extra: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        body = error_body(status, message, request_id=rid, code=code)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
