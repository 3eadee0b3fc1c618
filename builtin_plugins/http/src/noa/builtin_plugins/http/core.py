"""The HTTP core's own ASGI layers, outermost first:

``RequestCore``  request id (taken from ``X-Request-ID`` or generated) on the scope and on
                 every response; a last-resort 500 in the standard shape.
(plugin middleware, e.g. metrics and access logs, sees every response below)
``Admission``    bounds requests in flight (503 + ``Retry-After`` past the bound, at once)
                 and applies the request timeout (504). Probe routes skip both, so an
                 orchestrator can still see a saturated server.

Plain ASGI rather than Litestar middleware: these run on every request and must be cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection
from random import getrandbits
from typing import Any

from noa.builtin_plugins.http.access import RESPONSE_HEADERS_STATE_KEY
from noa.builtin_plugins.http.errors import error_body
from noa.plugin_sdk.transport import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Admission", "RequestCore"]

log = logging.getLogger("noa.http")

_HEADER = b"x-request-id"
#: ``scope["state"]`` key of the response's headers once it started (set by RequestCore).
SENT_HEADERS_STATE_KEY = "noa.sent_headers"
_MAX_ID = 128
_ID_BYTES = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_.:")


def _new_id() -> str:
    """32 random hex digits. Not os.urandom: a system call per request releases the GIL
    to granian's threads and measured ~24 us of worker CPU per request under load,
    against ~0.2 us here. Request ids need to be unique, not unpredictable; the random
    module reseeds itself in each forked worker."""
    return f"{getrandbits(128):032x}"


def _incoming_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The caller's request id if it is short and made of safe characters only."""
    for name, value in headers:
        if name == _HEADER:
            if 0 < len(value) <= _MAX_ID and _ID_BYTES.issuperset(value):
                return value.decode("ascii")
            return None
    return None


#: ``(path prefix, error_body(status, message) -> bytes)``: route groups' own error shapes.
ErrorShapes = tuple[tuple[str, Callable[[int, str], bytes]], ...]


async def _reply(
    send: Send,
    status: int,
    message: str,
    rid: str | None,
    *,
    code: str | None = None,
    extra: tuple[tuple[bytes, bytes], ...] = (),
    path: str = "",
    shapes: ErrorShapes = (),
) -> None:
    for prefix, shape in shapes:
        if path.startswith(prefix):
            body = shape(status, message)
            break
    else:
        body = error_body(status, message, request_id=rid, code=code)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# Sent on every response when ``http.security_headers`` is on. The API serves JSON only,
# so its policy loads nothing; the /schema pages (Swagger UI) get none, as they load
# scripts and styles from a CDN.
_SECURITY = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
_DOCS_PREFIX = "/schema"


def security_headers(hsts_max_age_s: int) -> Callable[[Scope], list[tuple[bytes, bytes]]]:
    """The hardening headers for one request's response."""
    api = [*_SECURITY, _CSP]
    docs = list(_SECURITY)
    hsts = (b"strict-transport-security", f"max-age={hsts_max_age_s}".encode())

    def for_request(scope: Scope) -> list[tuple[bytes, bytes]]:
        chosen = docs if scope["path"].startswith(_DOCS_PREFIX) else api
        if hsts_max_age_s and scope.get("scheme") == "https":
            return [*chosen, hsts]
        return chosen

    return for_request


def _is_event_stream(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(
        name.lower() == b"content-type" and value.startswith(b"text/event-stream")
        for name, value in headers
    )


class RequestCore:
    """Outermost layer: request ids, hardening headers and the last-resort error."""

    __slots__ = ("app", "extra_headers")

    def __init__(
        self,
        app: ASGIApp,
        extra_headers: Callable[[Scope], list[tuple[bytes, bytes]]] | None = None,
    ) -> None:
        self.app = app
        self.extra_headers = extra_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _incoming_id(scope["headers"]) or _new_id()
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state["request_id"] = rid
        added = [(_HEADER, rid.encode("ascii"))]
        if self.extra_headers is not None:
            added += self.extra_headers(scope)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Inner layers read the status here instead of wrapping send again.
                state["status"] = message["status"]
                headers = message.get("headers")
                if not isinstance(headers, list):
                    headers = message["headers"] = list(headers or ())
                state[SENT_HEADERS_STATE_KEY] = headers  # for Admission's event streams
                headers.extend(added)
                # Headers the access check asked for (RateLimit-*).
                for name, value in state.get(RESPONSE_HEADERS_STATE_KEY, ()):
                    headers.append((name.encode("latin-1"), value.encode("latin-1")))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error outside the router (request_id=%s)", rid)
            if "status" not in state:
                await _reply(send_with_id, 500, "internal server error", rid)


class Admission:
    """Innermost core layer: the in-flight bound and the request timeout.

    The timeout is enforced by one reaper task per worker that wakes every
    ``timeout_s / 20`` (between 10 ms and 1 s) and cancels requests past their
    deadline, instead of a timer per request: ``asyncio.timeout`` costs several
    microseconds on every request, which is most of this layer's budget.

    Server-Sent Event streams (a response started as ``text/event-stream``) are meant to
    stay open: at its next tick the reaper takes such a stream off the clock and out of
    the in-flight count, up to ``max_event_streams`` at once; past that, a stream counts
    as a request, and ends at the timeout (its client reconnects).
    """

    __slots__ = (
        "_deadlines",
        "_expired",
        "_reaper",
        "_streaming",
        "app",
        "error_shapes",
        "event_streams",
        "in_flight",
        "max_event_streams",
        "max_in_flight",
        "probe_paths",
        "retry_after",
        "tick_s",
        "timeout_s",
    )

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_in_flight: int,
        timeout_s: float,
        retry_after_s: int,
        probe_paths: Collection[str],
        error_shapes: ErrorShapes = (),
        max_event_streams: int = 0,
    ) -> None:
        self.app = app
        self.max_event_streams = max_event_streams
        self.event_streams = 0
        self._streaming: set[asyncio.Task[Any]] = set()
        self.error_shapes = error_shapes
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.tick_s = min(1.0, max(0.01, timeout_s / 20))
        self.retry_after = str(retry_after_s).encode()
        self.probe_paths = frozenset(probe_paths)
        self.in_flight = 0
        self._deadlines: dict[asyncio.Task[Any], tuple[float, dict[str, Any]]] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._reaper: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.probe_paths:
            await self.app(scope, receive, send)
            return
        state = scope["state"]  # set by RequestCore, as is state["status"] once started
        rid = state.get("request_id")
        if self.in_flight >= self.max_in_flight:
            await _reply(
                send,
                503,
                "the server is at capacity; retry after the Retry-After delay",
                rid,
                code="overloaded",
                extra=((b"retry-after", self.retry_after),),
                path=scope["path"],
                shapes=self.error_shapes,
            )
            return
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        self._deadlines[task] = (loop.time() + self.timeout_s, state)
        if self._reaper is None or self._reaper.done():
            self._reaper = loop.create_task(self._reap(), name="noa-request-timeouts")
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            self._expired.discard(task)
            task.uncancel()
            if _is_event_stream(state.get(SENT_HEADERS_STATE_KEY, ())):
                # An event stream over the limit: end it cleanly, its client reconnects.
                with contextlib.suppress(Exception):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
            elif "status" not in state:
                await _reply(
                    send,
                    504,
                    f"the request took longer than {self.timeout_s:g} s",
                    rid,
                    path=scope["path"],
                    shapes=self.error_shapes,
                )
        finally:
            if task in self._streaming:
                self._streaming.discard(task)
                self.event_streams -= 1
            else:
                self.in_flight -= 1
                self._deadlines.pop(task, None)

    async def _reap(self) -> None:
        loop = asyncio.get_running_loop()
        while self._deadlines:
            await asyncio.sleep(self.tick_s)
            now = loop.time()
            for task, (deadline, state) in list(self._deadlines.items()):
                if (
                    self.event_streams < self.max_event_streams
                    and SENT_HEADERS_STATE_KEY in state
                    and _is_event_stream(state[SENT_HEADERS_STATE_KEY])
                ):
                    del self._deadlines[task]
                    self._streaming.add(task)
                    self.event_streams += 1
                    self.in_flight -= 1
                elif deadline <= now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()
