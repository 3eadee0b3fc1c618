"""Hook implementations of the observability plugin; each delegates to its module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from noa.builtin_plugins.observability.config import ObservabilityConfig
from noa.builtin_plugins.observability.logs import access_logger, configure_logging
from noa.plugin_sdk import (
    Host,
    Middleware,
    PluginConfig,
    PluginInfo,
    Registry,
    RouteGroup,
    hookimpl,
)
from noa.plugin_sdk.metrics import METRICS_STATE_KEY
from noa.plugin_sdk.tracing import TRACER_STATE_KEY

PLUGIN_INFO = PluginInfo(
    description="structlog logs, Prometheus metrics, OpenTelemetry tracing", after=("http",)
)

_STATE = "observability"


def _config(host: Host) -> ObservabilityConfig:
    return host.section("observability", ObservabilityConfig)


@hookimpl
def noa_register_config_sections(sections: Registry[type[PluginConfig]]) -> None:
    sections.add("observability", ObservabilityConfig)


@hookimpl
def noa_configure(host: Host) -> None:
    configure_logging(_config(host))
    if _config(host).metrics:
        from noa.builtin_plugins.observability.registry import PrometheusRegistry

        host.state[METRICS_STATE_KEY] = PrometheusRegistry()


@hookimpl
def noa_before_serve(host: Host) -> None:
    if _config(host).metrics:
        from noa.builtin_plugins.observability.multiproc import prepare_multiprocess_dir

        prepare_multiprocess_dir(Path(host.server.data_dir) / "prometheus")


def _shared(host: Host) -> dict[str, Any]:
    """This process's metrics and tracer, made once and shared by routes and middleware."""
    shared: dict[str, Any] | None = host.state.get(_STATE)
    if shared is None:
        config = _config(host)
        shared = {"metrics": None, "tracer": None, "provider": None}
        if config.metrics:
            from noa.builtin_plugins.observability.metrics import HttpMetrics

            shared["metrics"] = HttpMetrics(host.state[METRICS_STATE_KEY])
        if config.otlp_endpoint:
            from noa.builtin_plugins.observability.tracing import start_tracing

            shared["tracer"], shared["provider"] = start_tracing(config)
            # For transports with their own server (gRPC), which make their own spans.
            host.state[TRACER_STATE_KEY] = shared["tracer"]
        host.state[_STATE] = shared
    return shared


@hookimpl
def noa_register_routes(routes: Registry[RouteGroup], host: Host) -> None:
    config = _config(host)
    metrics = _shared(host)["metrics"]
    if metrics is not None:
        routes.add(
            "metrics",
            RouteGroup(
                handlers=(metrics.handler(config.metrics_path),),
                probe=True,
                scope="metrics:read",
                public=config.metrics_public,
            ),
        )


@hookimpl
def noa_register_middleware(middleware: Registry[Middleware], host: Host) -> None:
    from noa.builtin_plugins.observability.middleware import Telemetry

    config = _config(host)
    shared = _shared(host)
    log = access_logger(config) if config.access_log else None
    shared["access_log"] = log
    if shared["metrics"] is None and log is None and shared["tracer"] is None:
        return

    def factory(app: Any) -> Any:
        return Telemetry(app, metrics=shared["metrics"], access_log=log, tracer=shared["tracer"])

    middleware.add("telemetry", Middleware(factory=factory))


@hookimpl
def noa_startup(host: Host) -> None:
    # Made at assembly with the routes; made here when no HTTP app was assembled.
    _shared(host)


@hookimpl
def noa_shutdown(host: Host) -> None:
    shared = host.state.get(_STATE)
    if not shared:
        return
    if shared.get("access_log") is not None:
        shared["access_log"].flush()
    if shared["provider"] is not None:
        shared["provider"].shutdown()
    if shared["metrics"] is not None:
        shared["metrics"].flush()
        shared["metrics"].mark_process_dead()
