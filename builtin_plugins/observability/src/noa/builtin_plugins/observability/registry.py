"""The metrics registry other plugins use (``noa.plugin_sdk.metrics``), on Prometheus.

Offered in ``host.state`` at configure time, when the ``noa serve`` parent has not yet
exported the multiprocess directory, so prometheus_client is imported only when the
first metric is created (in a worker, at startup).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from noa.plugin_sdk.metrics import Counter, Gauge, Histogram

__all__ = ["PrometheusRegistry"]


class PrometheusRegistry:
    """Implements :class:`noa.plugin_sdk.metrics.MetricsRegistry`."""

    def __init__(self) -> None:
        self._registry: Any = None
        self._metrics: dict[str, tuple[str, tuple[str, ...], Any]] = {}

    @property
    def registry(self) -> Any:
        """The ``CollectorRegistry`` every metric of this process lives in."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            self._registry = CollectorRegistry(auto_describe=True)
        return self._registry

    def _get(self, kind: str, name: str, labelnames: Sequence[str], make: Any) -> Any:
        labels = tuple(labelnames)
        known = self._metrics.get(name)
        if known is not None:
            if known[:2] != (kind, labels):
                raise ValueError(
                    f"metric {name!r} already exists as a {known[0]} with labels {known[1]}"
                )
            return known[2]
        metric = make()
        self._metrics[name] = (kind, labels, metric)
        return metric

    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
        from prometheus_client import Counter as PromCounter

        return self._get(  # type: ignore[no-any-return]
            "counter",
            name,
            labelnames,
            lambda: PromCounter(name, documentation, tuple(labelnames), registry=self.registry),
        )

    def histogram(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] | None = None,
    ) -> Histogram:
        from prometheus_client import Histogram as PromHistogram

        def make() -> Any:
            extra = {"buckets": tuple(buckets)} if buckets else {}
            return PromHistogram(
                name, documentation, tuple(labelnames), registry=self.registry, **extra
            )

        return self._get("histogram", name, labelnames, make)  # type: ignore[no-any-return]

    def gauge(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Gauge:
        from prometheus_client import Gauge as PromGauge

        return self._get(  # type: ignore[no-any-return]
            "gauge",
            name,
            labelnames,
            lambda: PromGauge(
                name,
                documentation,
                tuple(labelnames),
                registry=self.registry,
                multiprocess_mode="livesum",
            ),
        )
