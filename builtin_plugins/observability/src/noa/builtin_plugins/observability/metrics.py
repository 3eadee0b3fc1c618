"""Prometheus metrics for HTTP requests, correct across granian worker processes.

Under ``noa serve`` each worker writes to a shared multiprocess directory (prepared once
by the parent in ``noa_before_serve``) and ``/metrics`` aggregates every worker. In a
single process (tests, ``noa check``) an ordinary registry is used. prometheus_client
is imported here only, after the parent has exported ``PROMETHEUS_MULTIPROC_DIR``.
"""

from __future__ import annotations

import os
from typing import Any

from litestar import Response, get
from litestar.handlers import HTTPRouteHandler
from noa.builtin_plugins.observability.multiproc import MULTIPROC_ENV
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

__all__ = ["HttpMetrics"]

# Latency buckets in seconds, from sub-millisecond probes to long inference calls.
BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class HttpMetrics:
    """``http_requests_total`` and ``http_request_duration_seconds`` by method, route, status."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests handled, by method, route template and status code.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time from request start to the end of the response, in seconds.",
            ("method", "route", "status"),
            buckets=BUCKETS,
            registry=self.registry,
        )
        # labels() costs a lock and a dict walk; keep the children per label set.
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(*key), self.duration.labels(*key))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self) -> bytes:
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)

    def mark_process_dead(self) -> None:
        if os.environ.get(MULTIPROC_ENV):
            multiprocess.mark_process_dead(os.getpid())

    def handler(self, path: str) -> HTTPRouteHandler:
        @get(
            path,
            summary="Prometheus metrics",
            tags=["probes"],
            include_in_schema=True,
            sync_to_thread=False,
        )
        def metrics() -> Response[bytes]:
            """Prometheus text exposition of every worker's counters and histograms."""
            return Response(content=self.exposition(), media_type=CONTENT_TYPE_LATEST)

        return metrics
