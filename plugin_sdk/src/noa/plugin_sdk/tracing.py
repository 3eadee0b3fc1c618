"""The current request's W3C trace context, for plugins that make outgoing calls.

The observability plugin sets it for every request; a plugin calling another service
adds :func:`outgoing_headers` to its request so the trace continues there.

A transport with its own server (gRPC) makes a span per call with the tracer the
observability plugin keeps at ``host.state[TRACER_STATE_KEY]`` while it exports traces
(an OpenTelemetry ``Tracer``; absent when tracing is off).
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["TRACER_STATE_KEY", "current_traceparent", "outgoing_headers"]

TRACER_STATE_KEY = "noa.tracer"

current_traceparent: ContextVar[str | None] = ContextVar("noa_traceparent", default=None)


def outgoing_headers() -> dict[str, str]:
    """``{"traceparent": ...}`` for the request being handled, or ``{}`` outside one."""
    value = current_traceparent.get()
    return {"traceparent": value} if value else {}
