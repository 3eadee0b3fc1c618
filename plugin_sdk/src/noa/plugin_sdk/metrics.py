"""Metrics for plugins, without depending on a metrics library.

A plugin asks the host for its metrics registry (:func:`metrics_of`) in ``noa_startup``
and creates counters and histograms there. When the observability plugin is enabled
they are Prometheus metrics served at ``/metrics`` (exact across workers); otherwise
they are no-ops and cost nothing. Create them at startup, not at import: Prometheus
picks its multiprocess storage when first used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = [
    "METRICS_STATE_KEY",
    "Counter",
    "Gauge",
    "Histogram",
    "MetricsRegistry",
    "NoMetrics",
    "metrics_of",
]

#: The ``host.state`` key under which a metrics plugin offers its registry.
METRICS_STATE_KEY = "noa.metrics"


class Counter(Protocol):
    def labels(self, *values: str) -> Counter: ...

    def inc(self, amount: float = 1.0) -> None: ...


class Gauge(Protocol):
    """A value that goes up and down; across workers the values are summed."""

    def labels(self, *values: str) -> Gauge: ...

    def set(self, value: float) -> None: ...


class Histogram(Protocol):
    def labels(self, *values: str) -> Histogram: ...

    def observe(self, amount: float) -> None: ...


class MetricsRegistry(Protocol):
    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
        """A counter; asking twice for one name returns the same counter."""
        ...

    def histogram(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] | None = None,
    ) -> Histogram:
        """A histogram; asking twice for one name returns the same histogram."""
        ...

    def gauge(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Gauge:
        """A gauge (summed over live workers); asking twice returns the same gauge."""
        ...


class _Nothing:
    __slots__ = ()

    def labels(self, *values: str) -> _Nothing:
        return self

    def inc(self, amount: float = 1.0) -> None:
        return None

    def observe(self, amount: float) -> None:
        return None

    def set(self, value: float) -> None:
        return None


_NOTHING = _Nothing()


class NoMetrics:
    """The registry used when no metrics plugin is enabled: every metric is a no-op."""

    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
        return _NOTHING

    def histogram(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] | None = None,
    ) -> Histogram:
        return _NOTHING

    def gauge(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Gauge:
        return _NOTHING


def metrics_of(state: dict[str, object]) -> MetricsRegistry:
    """The metrics registry offered in ``host.state``, or :class:`NoMetrics`."""
    registry = state.get(METRICS_STATE_KEY)
    return registry if registry is not None else NoMetrics()  # type: ignore[return-value]
