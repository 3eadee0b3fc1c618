"""Metrics, access logs and tracing through a real kernel, a real Prometheus registry and a
real OTLP/HTTP exporter posting to a collector endpoint on loopback."""

from __future__ import annotations

import json
import re
import types
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import get
from litestar.params import FromPath
from noa.plugin_sdk import Registry, RouteGroup, hookimpl
from noa.plugin_sdk.testing.otlp import OtlpCollector
from noa.plugin_sdk.tracing import outgoing_headers

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


def items_plugin() -> types.ModuleType:
    module = types.ModuleType("items")

    @get("/v1/items/{item_id:int}", sync_to_thread=False)
    def read(item_id: FromPath[int]) -> dict[str, Any]:
        # What a plugin would send on an outgoing call made while handling this request.
        return {"id": item_id, "outgoing": outgoing_headers()}

    @hookimpl
    def noa_register_routes(routes: Registry[RouteGroup]) -> None:
        routes.add("items", RouteGroup(handlers=(read,)))

    module.noa_register_routes = noa_register_routes  # type: ignore[attr-defined]
    return module


def sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{"):
            series, value = line.rsplit(" ", 1)
            got = ",".join(sorted(series[len(name) + 1 : -1].split(",")))
            if got == wanted:
                return float(value)
    return 0.0


async def test_metrics_count_requests_by_route_template_and_status(noa_boot: Any) -> None:
    async with noa_boot(["http", "observability"], extra_plugins={"items": items_plugin()}) as noa:
        for item in (1, 2, 3):
            assert (await noa.client.get(f"/v1/items/{item}")).status_code == 200
        await noa.client.get("/v1/nothing-here")
        response = await noa.client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; version=1.0.0; charset=utf-8"
        text = response.text
        route = "/v1/items/{item_id}"
        assert sample(text, "http_requests_total", method="GET", route=route, status="200") == 3
        assert (
            sample(text, "http_requests_total", method="GET", route="<unmatched>", status="404")
            == 1
        )
        assert (
            sample(
                text, "http_request_duration_seconds_count", method="GET", route=route, status="200"
            )
            == 3
        )
        assert 'le="0.005"' in text


async def test_access_log_is_one_json_line_per_request(
    noa_boot: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    async with noa_boot(["http", "observability"], extra_plugins={"items": items_plugin()}) as noa:
        capfd.readouterr()
        response = await noa.client.get(
            "/v1/items/7", headers={"X-Request-ID": "req-42", "traceparent": TRACEPARENT}
        )
        assert response.json()["outgoing"]["traceparent"] == TRACEPARENT
    err = capfd.readouterr().err  # after shutdown, which flushes the access log buffer
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    (entry,) = [line for line in lines if line.get("event") == "request"]
    assert entry["request_id"] == "req-42"
    assert (entry["method"], entry["route"], entry["path"], entry["status"]) == (
        "GET",
        "/v1/items/{item_id}",
        "/v1/items/7",
        200,
    )
    assert entry["trace_id"] == TRACE_ID
    assert (entry["level"], entry["logger"]) == ("info", "noa.access")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", entry["timestamp"])
    assert isinstance(entry["duration_ms"], float)


async def test_access_log_and_metrics_can_be_switched_off(
    noa_boot: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    config = {"observability": {"access_log": False, "metrics": False}}
    async with noa_boot(["http", "observability"], config=config) as noa:
        capfd.readouterr()
        assert (await noa.client.get("/health")).status_code == 200
        assert (await noa.client.get("/metrics")).status_code == 404
        assert '"event":"request"' not in capfd.readouterr().err


async def test_console_format_is_not_json(noa_boot: Any, capfd: pytest.CaptureFixture[str]) -> None:
    async with noa_boot(
        ["http", "observability"], config={"observability": {"log_format": "console"}}
    ) as noa:
        capfd.readouterr()
        await noa.client.get("/health")
        err = capfd.readouterr().err
    line = next(line for line in err.splitlines() if "request" in line)
    assert not line.startswith("{") and "/health" in line


@pytest.fixture
def collector() -> Iterator[OtlpCollector]:
    with OtlpCollector() as running:
        yield running


async def test_spans_are_exported_over_otlp_and_continue_the_callers_trace(
    noa_boot: Any, collector: OtlpCollector
) -> None:
    config = {"observability": {"otlp_endpoint": collector.url, "service_name": "noa-test"}}
    async with noa_boot(
        ["http", "observability"], config=config, extra_plugins={"items": items_plugin()}
    ) as noa:
        response = await noa.client.get("/v1/items/5", headers={"traceparent": TRACEPARENT})
        outgoing = response.json()["outgoing"]["traceparent"]
    # Shutting the kernel down flushes the batch processor.
    assert collector.received.wait(10)
    (span,) = [s for s in collector.spans() if s.name.startswith("GET /v1/items")]
    assert span.name == "GET /v1/items/{item_id}"
    assert span.trace_id.hex() == TRACE_ID
    assert span.parent_span_id.hex() == "b7ad6b7169203331"
    attributes = {a.key: a.value for a in span.attributes}
    assert attributes["http.response.status_code"].int_value == 200
    assert attributes["http.route"].string_value == "/v1/items/{item_id}"
    # Outgoing calls carry this span as their parent, in the caller's trace.
    assert outgoing == f"00-{TRACE_ID}-{span.span_id.hex()}-01"


def counting_plugin() -> types.ModuleType:
    """A plugin that counts its own events through the SDK's metrics registry."""
    from noa.plugin_sdk.metrics import metrics_of

    module = types.ModuleType("counting")
    state: dict[str, Any] = {}

    @hookimpl
    def noa_startup(host: Any) -> None:
        metrics = metrics_of(host.state)
        state["jobs"] = metrics.counter("jobs_total", "Jobs done, by kind.", ("kind",))
        assert metrics.counter("jobs_total", "Jobs done, by kind.", ("kind",)) is state["jobs"]

    @get("/v1/jobs/{kind:str}", sync_to_thread=False)
    def job(kind: FromPath[str]) -> dict[str, str]:
        state["jobs"].labels(kind).inc()
        return {"kind": kind}

    @hookimpl
    def noa_register_routes(routes: Registry[RouteGroup]) -> None:
        routes.add("jobs", RouteGroup(handlers=(job,)))

    module.noa_startup = noa_startup  # type: ignore[attr-defined]
    module.noa_register_routes = noa_register_routes  # type: ignore[attr-defined]
    return module


async def test_plugins_metrics_are_served_with_the_http_metrics(noa_boot: Any) -> None:
    async with noa_boot(
        ["http", "observability"], extra_plugins={"counting": counting_plugin()}
    ) as noa:
        for kind in ("a", "a", "b"):
            assert (await noa.client.get(f"/v1/jobs/{kind}")).status_code == 200
        text = (await noa.client.get("/metrics")).text
    assert sample(text, "jobs_total", kind="a") == 2
    assert sample(text, "jobs_total", kind="b") == 1


async def test_plugins_metrics_are_no_ops_without_observability(noa_boot: Any) -> None:
    async with noa_boot(["http"], extra_plugins={"counting": counting_plugin()}) as noa:
        assert (await noa.client.get("/v1/jobs/a")).status_code == 200
        assert (await noa.client.get("/metrics")).status_code == 404


def test_a_metric_name_keeps_its_kind_and_labels() -> None:
    from noa.builtin_plugins.observability.registry import PrometheusRegistry

    registry = PrometheusRegistry()
    registry.counter("things_total", "Things.", ("a",))
    with pytest.raises(ValueError, match="already exists as a counter"):
        registry.histogram("things_total", "Things.", ("a",))
    with pytest.raises(ValueError, match="with labels"):
        registry.counter("things_total", "Things.", ("b",))
