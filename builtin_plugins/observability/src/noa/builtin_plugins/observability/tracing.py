"""OpenTelemetry tracing with the OTLP/HTTP exporter, on only when an endpoint is set.

Without an endpoint no tracer exists and the per-request cost is reading the incoming
``traceparent`` header so logs and outgoing calls still carry the caller's trace.
"""

from __future__ import annotations

import re
from typing import Any

from noa.builtin_plugins.observability.config import ObservabilityConfig

__all__ = ["TRACEPARENT", "parse_traceparent", "start_tracing"]

TRACEPARENT = re.compile(rb"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


def parse_traceparent(value: bytes) -> tuple[str, str] | None:
    """(trace_id, parent span id) of a valid W3C ``traceparent``; ``None`` otherwise."""
    match = TRACEPARENT.match(value)
    if match is None or match.group(1) == b"0" * 32:
        return None
    return match.group(1).decode(), match.group(2).decode()


def start_tracing(config: ObservabilityConfig) -> tuple[Any, Any]:
    """A tracer exporting to ``config.otlp_endpoint`` and its provider (to shut down)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": config.service_name}),
        sampler=ParentBased(TraceIdRatioBased(config.trace_sample_ratio)),
    )
    endpoint = config.otlp_endpoint.rstrip("/") + "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider.get_tracer("noa.http"), provider
