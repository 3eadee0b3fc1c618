"""The HTTP core asks the access policy (``noa_access_policy``) before every non-public
handler, with what the route declares; without one it serves local callers only."""

from __future__ import annotations

import types
from typing import Any

import httpx
import pytest
from litestar import asgi, get
from litestar.params import FromPath
from noa.plugin_sdk import Forbidden, PluginError, Registry, RouteGroup, hookimpl
from noa.plugin_sdk.auth import RESOURCE_OPT, AccessRequest, Grant, Principal


class RecordingPolicy:
    """Lets a request in when it carries ``x-let-in``; remembers what it was asked."""

    def __init__(self) -> None:
        self.asked: list[AccessRequest] = []

    async def authorize(self, request: AccessRequest) -> Grant:
        self.asked.append(request)
        if (b"x-let-in", b"yes") not in request.headers:
            raise Forbidden("not today", code="nope")
        return Grant(
            principal=Principal(subject="test:someone", scheme="test"),
            headers=(("x-granted", request.scope),),
        )


def plugin(policy: RecordingPolicy) -> types.ModuleType:
    @get("/guarded/{name:str}", sync_to_thread=False, opt={RESOURCE_OPT: "box:{name}"})
    def guarded(name: FromPath[str]) -> dict[str, str]:
        return {"name": name}

    @get("/bare", sync_to_thread=False)
    def bare() -> dict[str, bool]:
        return {"ok": True}

    @get("/free", sync_to_thread=False)
    def free() -> dict[str, bool]:
        return {"ok": True}

    module = types.ModuleType("policy_plugin")

    @hookimpl
    def noa_access_policy(host: Any) -> RecordingPolicy:
        return policy

    @hookimpl
    def noa_register_routes(routes: Registry[RouteGroup]) -> None:
        routes.add("boxes", RouteGroup(handlers=(guarded,), scope="boxes:read"))
        routes.add("bare", RouteGroup(handlers=(bare,)))
        routes.add("free", RouteGroup(handlers=(free,), public=True))

    module.noa_access_policy = noa_access_policy  # type: ignore[attr-defined]
    module.noa_register_routes = noa_register_routes  # type: ignore[attr-defined]
    return module


async def test_the_policy_sees_the_routes_scope_group_and_resource(noa_boot: Any) -> None:
    policy = RecordingPolicy()
    async with noa_boot(["http"], extra_plugins={"policy": plugin(policy)}) as noa:
        allowed = await noa.client.get("/guarded/b1", headers={"x-let-in": "yes"})
        assert allowed.json() == {"name": "b1"}
        assert allowed.headers["x-granted"] == "boxes:read"
        asked = policy.asked[-1]
        assert (asked.scope, asked.group, asked.resource) == ("boxes:read", "boxes", "box:b1")
        assert (asked.method, asked.path, asked.peer, asked.secure) == (
            "GET",
            "/guarded/b1",
            "127.0.0.1",
            False,
        )
        # A group that declares no scope needs "*".
        await noa.client.get("/bare", headers={"x-let-in": "yes"})
        assert policy.asked[-1].scope == "*"
        refused = await noa.client.get("/guarded/b1")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "nope"
        # Public routes and probes never reach the policy.
        count = len(policy.asked)
        for path in ("/free", "/health", "/ready", "/schema/openapi.json"):
            assert (await noa.client.get(path)).status_code == 200
        assert len(policy.asked) == count


async def test_without_a_policy_only_local_callers_are_served(noa_boot: Any) -> None:
    async with noa_boot(["http"]) as noa:
        assert (await noa.client.get("/v1/plugins")).status_code == 200
        forwarded = await noa.client.get("/v1/plugins", headers={"x-forwarded-for": "203.0.113.1"})
        assert forwarded.status_code == 401
        transport = httpx.ASGITransport(app=noa.app, client=("203.0.113.1", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://noa.test") as remote:
            refused = await remote.get("/v1/plugins")
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "auth_not_configured"
            assert (await remote.get("/health")).status_code == 200


def routes_plugin(group: RouteGroup) -> types.ModuleType:
    module = types.ModuleType("sneaky_routes")

    @hookimpl
    def noa_register_routes(routes: Registry[RouteGroup]) -> None:
        routes.add("sneaky", group)

    module.noa_register_routes = noa_register_routes  # type: ignore[attr-defined]
    return module


async def let_everyone_in(request: Any) -> None:
    return None


def ok() -> dict[str, bool]:
    return {"ok": True}


async def raw_asgi(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"raw"})


@pytest.mark.parametrize(
    ("handler", "why"),
    [
        (
            get("/own-hook", sync_to_thread=False, before_request=let_everyone_in)(ok),
            "sets its own before_request",
        ),
        (
            get("/cached", sync_to_thread=False, cache=60)(ok),
            "uses the response cache",
        ),
        (asgi("/raw", copy_scope=True)(raw_asgi), "is not an HTTP route"),
    ],
)
async def test_a_route_that_would_skip_the_check_stops_the_server(
    noa_boot: Any, handler: Any, why: str
) -> None:
    plugin = routes_plugin(RouteGroup(handlers=(handler,), scope="sneaky:read"))
    with pytest.raises(PluginError, match=why) as failure:
        async with noa_boot(["http"], extra_plugins={"sneaky": plugin}):
            pass
    assert "plugin 'sneaky'" in str(failure.value)


async def test_a_public_raw_asgi_route_is_allowed(noa_boot: Any) -> None:
    plugin = routes_plugin(
        RouteGroup(handlers=(asgi("/raw", copy_scope=True)(raw_asgi),), public=True)
    )
    async with noa_boot(["http"], extra_plugins={"sneaky": plugin}) as noa:
        assert (await noa.client.get("/raw")).text == "raw"


async def test_the_openapi_document_names_credentials_scopes_and_refusals(noa_boot: Any) -> None:
    async with noa_boot(["http"], extra_plugins={"policy": plugin(RecordingPolicy())}) as noa:
        document = (await noa.client.get("/schema/openapi.json")).json()
        assert set(document["components"]["securitySchemes"]) == {"bearer", "apiKey"}
        guarded = document["paths"]["/guarded/{name}"]["get"]
        assert guarded["security"] == [{"bearer": []}, {"apiKey": []}]
        assert "`boxes:read`" in guarded["description"]
        for status in ("401", "403", "429"):
            schema = guarded["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}
        assert "any scope" in document["paths"]["/bare"]["get"]["description"]
        for path in ("/free", "/health"):
            operation = document["paths"][path]["get"]
            assert "security" not in operation and "401" not in operation["responses"]
