"""Prometheus metrics for HTTP requests, correct across granian worker processes.

Under ``noa serve`` each worker writes to a shared multiprocess directory (prepared once
by the parent in ``noa_before_serve``) and ``/metrics`` aggregates every worker. In a
single process (tests, ``noa check``) an ordinary registry is used. prometheus_client
is imported here only, after the parent has exported ``PROMETHEUS_MULTIPROC_DIR``.
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left
from typing import Any

from litestar import Response, get
from litestar.handlers import HTTPRouteHandler
from noa.builtin_plugins.observability.multiproc import MULTIPROC_ENV
from noa.builtin_plugins.observability.registry import PrometheusRegistry
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

__all__ = ["HttpMetrics"]

# Litestar adds the charset to text types itself; prometheus_client's constant has one.
EXPOSITION_TYPE = CONTENT_TYPE_LATEST.replace("; charset=utf-8", "")

# Seconds between moving a worker's tallies into the shared metrics.
FLUSH_S = 0.5

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
    """``http_requests_total`` and ``http_request_duration_seconds`` by method, route, status.

    A request only adds to plain per-worker tallies (a dict lookup and a bisect); the
    tallies go into the Prometheus metrics at most ``FLUSH_S`` after the first request
    of a batch, before every scrape this worker serves, and at shutdown. Updating the
    multiprocess metrics on every request cost more than the rest of the telemetry
    together under load. So a scrape served by another worker can be up to
    ``FLUSH_S`` behind this one.
    """

    def __init__(self, metrics: PrometheusRegistry) -> None:
        self.registry = metrics.registry
        self.requests = metrics.counter(
            "http_requests_total",
            "HTTP requests handled, by method, route template and status code.",
            ("method", "route", "status"),
        )
        self.duration = metrics.histogram(
            "http_request_duration_seconds",
            "Time from request start to the end of the response, in seconds.",
            ("method", "route", "status"),
            buckets=BUCKETS,
        )
        # (method, route, status) -> [count, sum of seconds, count per bucket]
        self._pending: dict[tuple[str, str, int], list[Any]] = {}
        self._flush_armed = False

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        tally = self._pending.get(key)
        if tally is None:
            tally = self._pending[key] = [0, 0.0, [0] * (len(BUCKETS) + 1)]
        tally[0] += 1
        tally[1] += seconds
        tally[2][bisect_left(BUCKETS, seconds)] += 1
        if not self._flush_armed:
            self._flush_armed = True
            try:
                asyncio.get_running_loop().call_later(FLUSH_S, self.flush)
            except RuntimeError:  # no event loop: nothing will flush later, do it now
                self.flush()

    def flush(self) -> None:
        """Move the tallies into the Prometheus metrics (shared files under ``noa serve``)."""
        self._flush_armed = False
        pending, self._pending = self._pending, {}
        for (method, route, status), (count, total, buckets) in pending.items():
            labels = (method, route, str(status))
            self.requests.labels(*labels).inc(count)
            child: Any = self.duration.labels(*labels)
            # prometheus_client has no public call to add many observations at once;
            # its per-bucket values are what observe() itself increments.
            for value, n in zip(child._buckets, buckets, strict=True):
                if n:
                    value.inc(n)
            child._sum.inc(total)

    def exposition(self) -> bytes:
        self.flush()
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
            media_type=EXPOSITION_TYPE,
            sync_to_thread=False,
        )
        def metrics() -> Response[bytes]:
            """Prometheus text exposition of every worker's counters and histograms."""
            return Response(content=self.exposition(), media_type=EXPOSITION_TYPE)

        return metrics
