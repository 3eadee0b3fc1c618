"""Per-request telemetry: metrics, the access log line and the trace context.

One ASGI layer does all three so a request pays for one wrapper, one clock pair and one
header scan.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from noa.builtin_plugins.observability.metrics import HttpMetrics
from noa.builtin_plugins.observability.tracing import parse_traceparent
from noa.plugin_sdk.tracing import current_traceparent
from noa.plugin_sdk.transport import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Telemetry"]

_TRACEPARENT = b"traceparent"
UNMATCHED = "<unmatched>"


class Telemetry:
    __slots__ = ("access_log", "app", "metrics", "tracer")

    def __init__(
        self, app: ASGIApp, *, metrics: HttpMetrics | None, access_log: Any, tracer: Any
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        incoming = None
        for name, value in scope["headers"]:
            if name == _TRACEPARENT:
                incoming = value
                break
        if self.tracer is not None:
            await self._traced(scope, receive, send_status, incoming)
            return
        parsed = parse_traceparent(incoming) if incoming else None
        token = current_traceparent.set(incoming.decode() if parsed else None)
        try:
            await self.app(scope, receive, send_status)
        except asyncio.CancelledError:
            status = 499  # the request was abandoned (client gone or server stopping)
            raise
        finally:
            current_traceparent.reset(token)
            self._record(scope, status, started, parsed[0] if parsed else None)

    async def _traced(self, scope: Scope, receive: Receive, send: Send, incoming: bytes | None) -> None:
        from opentelemetry.propagate import extract
        from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        carrier = {"traceparent": incoming.decode("latin-1")} if incoming else {}
        method = scope["method"]
        with self.tracer.start_as_current_span(
            f"{method} {scope['path']}", context=extract(carrier), kind=SpanKind.SERVER
        ) as span:
            ctx = span.get_span_context()
            trace_id = format_trace_id(ctx.trace_id)
            flags = "01" if ctx.trace_flags.sampled else "00"
            token = current_traceparent.set(f"00-{trace_id}-{format_span_id(ctx.span_id)}-{flags}")
            try:
                await self.app(scope, receive, send_status)
            except asyncio.CancelledError:
                status = 499
                raise
            finally:
                current_traceparent.reset(token)
                route = scope.get("path_template") or UNMATCHED
                span.update_name(f"{method} {route}")
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                state = scope.get("state") or {}
                if "request_id" in state:
                    span.set_attribute("noa.request_id", state["request_id"])
                self._record(scope, status, started, trace_id)

    def _record(self, scope: Scope, status: int, started: float, trace_id: str | None) -> None:
        elapsed = time.perf_counter() - started
        route = scope.get("path_template") or UNMATCHED
        method = scope["method"]
        if self.metrics is not None:
            self.metrics.observe(method, route, status, elapsed)
        if self.access_log is not None:
            state = scope.get("state") or {}
            self.access_log.info(
                "request",
                request_id=state.get("request_id"),
                method=method,
                route=route,
                path=scope["path"],
                status=status,
                duration_ms=round(elapsed * 1000, 3),
                trace_id=trace_id,
            )
