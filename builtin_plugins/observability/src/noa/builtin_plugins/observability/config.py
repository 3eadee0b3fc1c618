"""The ``[observability]`` config section."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from noa.plugin_sdk import PluginConfig

__all__ = ["ObservabilityConfig"]


class ObservabilityConfig(PluginConfig, frozen=True):
    # "json": one JSON object a line (production); "console": coloured, for people.
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # One log line per HTTP request: request_id, method, route, status, duration_ms.
    access_log: bool = True
    # Serve Prometheus metrics at metrics_path and count every request.
    metrics: bool = True
    metrics_path: str = "/metrics"
    # The metrics route answers without credentials; false: it needs "metrics:read".
    metrics_public: bool = True
    # OTLP/HTTP endpoint of a collector (e.g. "http://127.0.0.1:4318"); empty: no tracing.
    otlp_endpoint: str = ""
    service_name: str = "noa"
    trace_sample_ratio: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 1.0
