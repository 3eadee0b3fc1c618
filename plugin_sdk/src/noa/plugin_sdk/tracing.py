"""The current request's W3C trace context, for plugins that make outgoing calls.

The observability plugin sets it for every request; a plugin calling another service
adds :func:`outgoing_headers` to its request so the trace continues there.
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["current_traceparent", "outgoing_headers"]

current_traceparent: ContextVar[str | None] = ContextVar("noa_traceparent", default=None)


def outgoing_headers() -> dict[str, str]:
    """``{"traceparent": ...}`` for the request being handled, or ``{}`` outside one."""
    value = current_traceparent.get()
    return {"traceparent": value} if value else {}
