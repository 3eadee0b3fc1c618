"""The streaming metrics, created at startup (no-ops without the observability plugin).

- ``streaming_connections{endpoint}``: open WebSockets (``events``, ``stream``) and SSE
  streams (``sse``), summed over workers;
- ``streaming_frames_total{endpoint,direction}``: frames received (``in``) and sent
  (``out``);
- ``streaming_events_dropped_total{endpoint}``: events dropped for slow consumers;
- ``streaming_refused_total{endpoint,reason}``: connections turned away (capacity, or
  the policy's code: ``missing_credentials``, ``insufficient_scope``, ``rate_limited``...).
"""

from __future__ import annotations

from noa.plugin_sdk.metrics import Counter, MetricsRegistry, NoMetrics

__all__ = ["Telemetry"]


class Telemetry:
    __slots__ = ("_connections", "_counts", "_dropped", "_frames", "_refused")

    def __init__(self, registry: MetricsRegistry | None = None) -> None:
        registry = registry if registry is not None else NoMetrics()
        self._connections = registry.gauge(
            "streaming_connections",
            "Open WebSocket connections and SSE streams, by endpoint.",
            ("endpoint",),
        )
        self._frames = registry.counter(
            "streaming_frames_total",
            "WebSocket frames and SSE events, by endpoint and direction (in, out).",
            ("endpoint", "direction"),
        )
        self._dropped = registry.counter(
            "streaming_events_dropped_total",
            "Events dropped because a client read too slowly, by endpoint.",
            ("endpoint",),
        )
        self._refused = registry.counter(
            "streaming_refused_total",
            "Connections turned away at connect, by endpoint and reason.",
            ("endpoint", "reason"),
        )
        self._counts: dict[str, int] = {}

    def connected(self, endpoint: str, delta: int) -> None:
        count = self._counts[endpoint] = self._counts.get(endpoint, 0) + delta
        self._connections.labels(endpoint).set(count)

    def frames(self, endpoint: str, direction: str, count: int) -> None:
        self._frames.labels(endpoint, direction).inc(count)

    def frames_counter(self, endpoint: str, direction: str) -> Counter:
        return self._frames.labels(endpoint, direction)

    def dropped(self, endpoint: str) -> Counter:
        return self._dropped.labels(endpoint)

    def refused(self, endpoint: str, reason: str) -> None:
        self._refused.labels(endpoint, reason).inc()
