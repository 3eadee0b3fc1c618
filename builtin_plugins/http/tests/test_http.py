"""The HTTP core through a real kernel and ASGI app: probes, request ids, the error
shape, limits, admission control and the OpenAPI document."""

from __future__ import annotations

import asyncio
import re
import types
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import msgspec
import pytest
from litestar import get, post
from litestar.params import FromPath, JSONBody
from litestar.response import ServerSentEvent
from noa.plugin_sdk import (
    CheckResult,
    HealthCheck,
    NotFound,
    Registry,
    RouteGroup,
    TooManyRequests,
    hookimpl,
)


class Item(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    count: Annotated[int, msgspec.Meta(ge=0)] = 0


def api_plugin(
    gate: asyncio.Event | None = None,
    healthy: list[bool] | None = None,
    arrived: asyncio.Queue[None] | None = None,
) -> types.ModuleType:
    """A plugin with routes that exercise every error path of the core."""
    module = types.ModuleType("api")

    @post("/v1/items", sync_to_thread=False)
    def create(data: JSONBody[Item]) -> Item:
        return data

    @get("/v1/items/{item_id:int}", sync_to_thread=False)
    def read(item_id: FromPath[int]) -> dict[str, int]:
        if item_id == 0:
            raise NotFound("item 0 does not exist", code="item_not_found", param="item_id")
        if item_id == 429:
            raise TooManyRequests("slow down", headers={"Retry-After": "7"})
        return {"id": item_id}

    @get("/v1/crash", sync_to_thread=False)
    def crash() -> None:
        raise RuntimeError("secret internal detail")

    @get("/v1/slow")
    async def slow() -> dict[str, bool]:
        await asyncio.sleep(2)
        return {"done": True}

    @get("/v1/gated")
    async def gated() -> dict[str, bool]:
        assert gate is not None
        assert arrived is not None
        arrived.put_nowait(None)
        await gate.wait()
        return {"done": True}

    @get("/v1/ticks")
    async def ticks() -> ServerSentEvent:
        async def every_100_ms() -> AsyncIterator[str]:
            for n in range(6):
                await asyncio.sleep(0.1)
                yield f"tick {n}"

        return ServerSentEvent(every_100_ms())

    @hookimpl
    def noa_register_routes(routes: Registry[RouteGroup]) -> None:
        routes.add("api", RouteGroup(handlers=(create, read, crash, slow, gated, ticks)))

    @hookimpl
    def noa_register_health_checks(checks: Registry[HealthCheck]) -> None:
        async def check() -> CheckResult:
            ok = healthy[0] if healthy else True
            return CheckResult() if ok else CheckResult(status="failing", detail="backend down")

        checks.add("backend", HealthCheck(check=check))

    module.noa_register_routes = noa_register_routes  # type: ignore[attr-defined]
    module.noa_register_health_checks = noa_register_health_checks  # type: ignore[attr-defined]
    return module


ERROR_KEYS = {"message", "type", "code", "param", "request_id", "details"}


def assert_error(response: Any, status: int, type_: str, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS
    assert (error["type"], error["code"]) == (type_, code)
    assert error["request_id"] == response.headers["x-request-id"]
    return dict(error)


async def test_liveness_and_probe_aliases(noa_boot: Any) -> None:
    async with noa_boot(["http"]) as noa:
        for path in ("/health", "/livez", "/healthz"):
            response = await noa.client.get(path)
            assert response.status_code == 200
            body = response.json()
            assert body["status"] == "ok"
            assert re.match(r"\d{4}-\d\d-\d\dT", body["timestamp"])


async def test_readiness_follows_component_checks(noa_boot: Any) -> None:
    healthy = [False]
    async with noa_boot(["http"], extra_plugins={"api": api_plugin(healthy=healthy)}) as noa:
        for path in ("/ready", "/readyz"):
            response = await noa.client.get(path)
            assert response.status_code == 503
            (component,) = response.json()["components"]
            assert (component["name"], component["plugin"], component["status"]) == (
                "backend",
                "api",
                "failing",
            )
            assert component["detail"] == "backend down"
        healthy[0] = True
        response = await noa.client.get("/ready")
        assert response.status_code == 200
        assert response.json()["status"] == "ready"


async def test_request_id_is_generated_echoed_or_replaced(noa_boot: Any) -> None:
    async with noa_boot(["http"]) as noa:
        generated = (await noa.client.get("/health")).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated)
        echoed = await noa.client.get("/health", headers={"X-Request-ID": "abc-123.retry:2"})
        assert echoed.headers["x-request-id"] == "abc-123.retry:2"
        for bad in ("x" * 200, "has space", "semi;colon"):
            replaced = await noa.client.get("/nope", headers={"X-Request-ID": bad})
            assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"])
            assert replaced.json()["error"]["request_id"] == replaced.headers["x-request-id"]


async def test_client_mistakes_get_the_standard_error_shape(noa_boot: Any) -> None:
    async with noa_boot(["http"], extra_plugins={"api": api_plugin()}) as noa:
        assert_error(await noa.client.get("/v1/unknown"), 404, "not_found_error", "not_found")
        assert_error(
            await noa.client.delete("/health"), 405, "invalid_request_error", "method_not_allowed"
        )
        error = assert_error(
            await noa.client.post("/v1/items", json={"name": "", "count": 1}),
            400,
            "invalid_request_error",
            "validation_error",
        )
        assert error["param"] == "name"
        assert "name: Expected `str` of length >= 1" in error["message"]
        error = assert_error(
            await noa.client.post(
                "/v1/items", content=b"{not json", headers={"content-type": "application/json"}
            ),
            400,
            "invalid_request_error",
            "bad_request",
        )
        assert "JSON is malformed" in error["message"]
        error = assert_error(
            await noa.client.post("/v1/items", json={"name": "a", "extra": 1}),
            400,
            "invalid_request_error",
            "validation_error",
        )
        assert "unknown field `extra`" in error["message"]
        assert_error(await noa.client.get("/v1/items/abc"), 404, "not_found_error", "not_found")
        error = assert_error(
            await noa.client.get("/v1/items/0"), 404, "not_found_error", "item_not_found"
        )
        assert (error["message"], error["param"]) == ("item 0 does not exist", "item_id")
        limited = await noa.client.get("/v1/items/429")
        assert_error(limited, 429, "rate_limit_error", "rate_limited")
        assert limited.headers["retry-after"] == "7"
        ok = await noa.client.post("/v1/items", json={"name": "pen", "count": 2})
        assert (ok.status_code, ok.json()) == (201, {"name": "pen", "count": 2})


async def test_server_fault_is_a_generic_500_without_traceback(
    noa_boot: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with noa_boot(["http"], extra_plugins={"api": api_plugin()}) as noa:
        response = await noa.client.get("/v1/crash")
        error = assert_error(response, 500, "server_error", "internal_error")
        assert error["message"] == "internal server error"
        assert "secret internal detail" not in response.text
        assert "Traceback" not in response.text
    assert any("secret internal detail" in (r.exc_text or str(r.exc_info)) for r in caplog.records)


async def test_body_over_the_limit_is_413(noa_boot: Any) -> None:
    async with noa_boot(
        ["http"], config={"http": {"max_body_bytes": 64}}, extra_plugins={"api": api_plugin()}
    ) as noa:
        big = {"name": "x" * 20, "count": 1, "pad": "y" * 200}
        assert_error(
            await noa.client.post("/v1/items", json=big),
            413,
            "invalid_request_error",
            "request_too_large",
        )
        ok = await noa.client.post("/v1/items", json={"name": "small"})
        assert ok.status_code == 201


async def test_request_over_the_timeout_is_504(noa_boot: Any) -> None:
    async with noa_boot(
        ["http"], config={"http": {"request_timeout_s": 0.2}}, extra_plugins={"api": api_plugin()}
    ) as noa:
        error = assert_error(await noa.client.get("/v1/slow"), 504, "timeout_error", "timeout")
        assert "0.2 s" in error["message"]


async def test_event_streams_outlive_the_timeout_and_free_their_slot(noa_boot: Any) -> None:
    config = {"http": {"request_timeout_s": 0.2, "max_in_flight": 1}}
    async with noa_boot(["http"], config=config, extra_plugins={"api": api_plugin()}) as noa:
        stream = asyncio.create_task(noa.client.get("/v1/ticks"))
        # Once the stream has started, its in-flight slot is free for other requests.
        for _ in range(200):
            other = await noa.client.get("/v1/items/1")
            if other.status_code != 503:
                break
            await asyncio.sleep(0.01)
        assert other.status_code == 200
        response = await stream
        assert response.headers["content-type"].startswith("text/event-stream")
        assert [line for line in response.text.splitlines() if line.startswith("data:")] == [
            f"data: tick {n}" for n in range(6)
        ]
        # An ordinary slow request still ends at the timeout.
        assert (await noa.client.get("/v1/slow")).status_code == 504


async def test_event_streams_past_the_limit_end_at_the_timeout(noa_boot: Any) -> None:
    config = {"http": {"request_timeout_s": 0.25, "max_event_streams": 0}}
    async with noa_boot(["http"], config=config, extra_plugins={"api": api_plugin()}) as noa:
        response = await noa.client.get("/v1/ticks")
        data = [line for line in response.text.splitlines() if line.startswith("data:")]
        assert data == [f"data: tick {n}" for n in range(len(data))]
        assert len(data) < 6


async def test_admission_control_rejects_at_once_and_keeps_probes_answering(noa_boot: Any) -> None:
    gate = asyncio.Event()
    config = {"http": {"max_in_flight": 2, "retry_after_s": 3}}
    arrived: asyncio.Queue[None] = asyncio.Queue()
    plugin = api_plugin(gate=gate, arrived=arrived)
    async with noa_boot(["http"], config=config, extra_plugins={"api": plugin}) as noa:
        held = [asyncio.create_task(noa.client.get("/v1/gated")) for _ in range(2)]
        for _ in held:  # both requests are inside the handler
            await asyncio.wait_for(arrived.get(), timeout=2)
        rejected = await asyncio.wait_for(noa.client.get("/v1/items/1"), timeout=2)
        error = assert_error(rejected, 503, "service_unavailable", "overloaded")
        assert rejected.headers["retry-after"] == "3"
        assert "capacity" in error["message"]
        for probe in ("/health", "/ready", "/livez"):
            assert (await asyncio.wait_for(noa.client.get(probe), timeout=2)).status_code == 200
        gate.set()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
        assert (await noa.client.get("/v1/items/1")).status_code == 200


async def test_plugins_endpoint_lists_the_same_rows_as_the_cli(noa_boot: Any) -> None:
    async with noa_boot(["http"], extra_plugins={"api": api_plugin()}) as noa:
        body = (await noa.client.get("/v1/plugins")).json()
        assert body["object"] == "list"
        rows = {row["name"]: row for row in body["data"]}
        assert rows["http"]["distribution"] == "noa-plugin-http"
        assert rows["http"]["state"] == "started"
        assert "noa_asgi_app" in rows["http"]["hooks"]
        assert rows["api"]["hooks"] == ["noa_register_health_checks", "noa_register_routes"]
        assert body["data"] == msgspec.json.decode(msgspec.json.encode(noa.kernel.plugins()))


async def test_openapi_schema_and_docs_page(noa_boot: Any) -> None:
    async with noa_boot(["http"], extra_plugins={"api": api_plugin()}) as noa:
        schema = (await noa.client.get("/schema/openapi.json")).json()
        assert schema["info"]["title"] == "NOA Unified Server"
        for path in ("/health", "/ready", "/v1/plugins", "/v1/items"):
            assert path in schema["paths"]
        # Errors are documented as what they are: the standard error body.
        bad_request = schema["paths"]["/v1/items"]["post"]["responses"]["400"]
        assert bad_request["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }
        assert schema["components"]["schemas"]["Error"]["properties"]["error"]["required"] == [
            "message",
            "type",
            "code",
            "param",
            "request_id",
            "details",
        ]
        page = await noa.client.get("/schema")
        assert page.status_code == 200
        assert "swagger" in page.text.lower()


async def test_openapi_can_be_switched_off(noa_boot: Any) -> None:
    async with noa_boot(["http"], config={"http": {"openapi": False}}) as noa:
        assert (await noa.client.get("/schema/openapi.json")).status_code == 404


async def test_every_response_carries_the_hardening_headers(noa_boot: Any) -> None:
    async with noa_boot(["http"], extra_plugins={"api": api_plugin()}) as noa:
        for response in (
            await noa.client.get("/health"),
            await noa.client.post("/v1/items", json={"name": ""}),  # an error too
            await noa.client.get("/nowhere"),
        ):
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["referrer-policy"] == "no-referrer"
            assert response.headers["content-security-policy"] == (
                "default-src 'none'; frame-ancestors 'none'"
            )
            assert "strict-transport-security" not in response.headers  # plain HTTP
        docs = await noa.client.get("/schema")
        assert docs.status_code == 200
        assert docs.headers["x-content-type-options"] == "nosniff"
        assert "content-security-policy" not in docs.headers  # Swagger UI loads from a CDN
        transport = httpx.ASGITransport(app=noa.app)
        async with httpx.AsyncClient(transport=transport, base_url="https://noa.test") as tls:
            over_tls = await tls.get("/health")
        assert over_tls.headers["strict-transport-security"] == "max-age=31536000"


async def test_hardening_headers_can_be_turned_off(noa_boot: Any) -> None:
    async with noa_boot(["http"], config={"http": {"security_headers": False}}) as noa:
        response = await noa.client.get("/health")
        assert "x-frame-options" not in response.headers
        assert "x-request-id" in response.headers


async def test_cors_answers_allowed_origins_only(noa_boot: Any) -> None:
    config = {"http": {"cors_allow_origins": ["https://app.example"]}}
    async with noa_boot(["http"], config=config, extra_plugins={"api": api_plugin()}) as noa:
        preflight = await noa.client.options(
            "/v1/items",
            headers={
                "origin": "https://app.example",
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type",
            },
        )
        assert preflight.status_code in (200, 204)
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        assert "POST" in preflight.headers["access-control-allow-methods"]
        simple = await noa.client.get("/health", headers={"origin": "https://app.example"})
        assert simple.headers["access-control-allow-origin"] == "https://app.example"
        other = await noa.client.get("/health", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    async with noa_boot(["http"]) as noa:  # off by default
        response = await noa.client.get("/health", headers={"origin": "https://app.example"})
        assert "access-control-allow-origin" not in response.headers
