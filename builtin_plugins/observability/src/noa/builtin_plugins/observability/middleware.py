"""Per-request telemetry: metrics, the access log line and the trace context.

One ASGI layer does all three so a request pays for one clock pair and one header scan.
It does not wrap ``send``: the HTTP core records the response status in
``scope["state"]["status"]``.
"""

from __future__ import annotations

import time
from typing import Any

from noa.builtin_plugins.observability.metrics import HttpMetrics
from noa.builtin_plugins.observability.tracing import parse_traceparent
from noa.plugin_sdk.tracing import current_traceparent
from noa.plugin_sdk.transport import ASGIApp, Receive, Scope, Send

__all__ = ["Telemetry"]

_TRACEPARENT = b"traceparent"
UNMATCHED = "<unmatched>"
# Status recorded for a request that ended without a response (client gone, cancelled).
ABANDONED = 499


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
        incoming = None
        for name, value in scope["headers"]:
            if name == _TRACEPARENT:
                incoming = value
                break
        if self.tracer is not None:
            await self._traced(scope, receive, send, incoming, started)
            return
        parsed = parse_traceparent(incoming) if incoming else None
        token = current_traceparent.set(incoming.decode() if parsed else None) if parsed else None
        try:
            await self.app(scope, receive, send)
        finally:
            if token is not None:
                current_traceparent.reset(token)
            self._record(scope, started, parsed[0] if parsed else None)

    async def _traced(
        self, scope: Scope, receive: Receive, send: Send, incoming: bytes | None, started: float
    ) -> None:
        from opentelemetry.propagate import extract
        from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

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
                await self.app(scope, receive, send)
            finally:
                current_traceparent.reset(token)
                route = scope.get("path_template") or UNMATCHED
                state = scope.get("state") or {}
                span.update_name(f"{method} {route}")
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", state.get("status", ABANDONED))
                if "request_id" in state:
                    span.set_attribute("noa.request_id", state["request_id"])
                self._record(scope, started, trace_id)

    def _record(self, scope: Scope, started: float, trace_id: str | None) -> None:
        elapsed = time.perf_counter() - started
        route = scope.get("path_template") or UNMATCHED
        method = scope["method"]
        state = scope.get("state") or {}
        # The HTTP core records the status it sent; none means no response went out.
        status = state.get("status", ABANDONED)
        if self.metrics is not None:
            self.metrics.observe(method, route, status, elapsed)
        if self.access_log is not None:
            self.access_log.request(
                {
                    "request_id": state.get("request_id"),
                    "method": method,
                    "route": route,
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "trace_id": trace_id,
                }
            )
