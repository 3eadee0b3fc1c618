"""Scopes on every route, through the real HTTP app: who gets in, who gets 401, 403, 429.

The server runs every plugin the policy needs (storage on SQLite, the in-process broker
and the audit table), with JWT (HS256), capability keys and rate limits configured, plus
a test plugin whose routes declare scopes, a resource, nothing, or public.
"""

from __future__ import annotations

import asyncio
import socket
import time
import types
from typing import Any

import httpx
import jwt
import pytest
from litestar import Request, get, post
from litestar.params import FromPath, JSONBody
from noa.plugin_sdk import Registry, RouteGroup, hookimpl
from noa.plugin_sdk.auth import PRINCIPAL_STATE_KEY, RESOURCE_OPT, SCOPE_OPT
from noa.plugin_sdk.ports.storage import STORAGE_STATE_KEY

PLUGINS = ["http", "observability", "broker", "storage", "cache", "audit", "auth"]
SECRET = "test-secret-of-at-least-32-bytes-0123456789"
ISSUER = "https://issuer.test"
AUDIENCE = "noa"


def demo_plugin() -> types.ModuleType:
    @get("/demo/read", sync_to_thread=False)
    def read(request: Request[Any, Any, Any]) -> dict[str, Any]:
        principal = request.state[PRINCIPAL_STATE_KEY]
        return {"subject": principal.subject, "scheme": principal.scheme}

    @get("/demo/things/{name:str}", sync_to_thread=False, opt={RESOURCE_OPT: "thing:{name}"})
    def thing(name: FromPath[str]) -> dict[str, str]:
        return {"thing": name}

    @post("/demo/write", sync_to_thread=False, opt={SCOPE_OPT: "demo:write"}, status_code=200)
    def write(data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
        return data

    @get("/undeclared/x", sync_to_thread=False)
    def undeclared() -> dict[str, bool]:
        return {"ok": True}

    @get("/open/x", sync_to_thread=False)
    def public() -> dict[str, bool]:
        return {"ok": True}

    module = types.ModuleType("demo_routes")

    @hookimpl
    def noa_register_routes(routes: Registry[RouteGroup]) -> None:
        routes.add("demo", RouteGroup(handlers=(read, thing, write), scope="demo:read"))
        routes.add("undeclared", RouteGroup(handlers=(undeclared,)))
        routes.add("open", RouteGroup(handlers=(public,), public=True))

    module.noa_register_routes = noa_register_routes  # type: ignore[attr-defined]
    return module


def config(data_dir: str, **auth: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "anonymous": "off",
        "jwt_keys": [{"algorithms": ["HS256"], "secret": {"env": "TEST_JWT_SECRET"}}],
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        "capability_keys": [{"id": "k1", "secret": {"env": "TEST_CAP_KEY"}}],
        "rate_limits": {"demo": {"per_s": 0.001, "burst": 5}},
    }
    base.update(auth)
    return {"server": {"data_dir": data_dir}, "auth": base}


ENV = {"TEST_JWT_SECRET": SECRET, "TEST_CAP_KEY": "capability-key-0123456789abcdef0123"}


def token(scope: str, sub: str = "alice", **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 300}
    payload.update(scope=scope, **claims)
    return jwt.encode(payload, SECRET, algorithm="HS256")


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


@pytest.fixture
async def server(noa_boot: Any, data_dir: str) -> Any:
    async with noa_boot(
        PLUGINS, config=config(data_dir), extra_plugins={"demo": demo_plugin()}, environ=ENV
    ) as noa:
        yield noa


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


async def test_no_credentials_is_401_except_on_public_and_probe_routes(server: Any) -> None:
    client = server.client
    refused = await client.get("/demo/read")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert error_of(refused)["code"] == "missing_credentials"
    for path in ("/health", "/ready", "/metrics", "/open/x", "/schema/openapi.json"):
        assert (await client.get(path)).status_code == 200, path
    assert (await client.get("/v1/plugins")).status_code == 401


async def test_a_token_with_the_scope_gets_in_and_the_handler_sees_who(server: Any) -> None:
    response = await server.client.get("/demo/read", headers=bearer(token("demo:read")))
    assert response.status_code == 200
    assert response.json() == {"subject": f"jwt:{ISSUER}#alice", "scheme": "jwt"}
    # An area wildcard covers the route; "*" covers everything.
    assert (await server.client.get("/demo/read", headers=bearer(token("demo:*")))).is_success
    assert (await server.client.get("/v1/plugins", headers=bearer(token("*")))).is_success


async def test_a_scope_too_narrow_is_403_naming_the_scope(server: Any) -> None:
    read_only = bearer(token("demo:read"))
    refused = await server.client.post("/demo/write", json={"a": 1}, headers=read_only)
    assert refused.status_code == 403
    assert "demo:write" in error_of(refused)["message"]
    writer = bearer(token("demo:read demo:write"))
    assert (await server.client.post("/demo/write", json={"a": 1}, headers=writer)).is_success


async def test_a_route_that_declares_no_scope_is_closed_but_to_admins(server: Any) -> None:
    assert (
        await server.client.get("/undeclared/x", headers=bearer(token("demo:*")))
    ).status_code == 403
    assert (await server.client.get("/undeclared/x", headers=bearer(token("*")))).is_success


async def test_bad_authorization_headers_are_401(server: Any) -> None:
    for headers in (
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer not-a-known-format"},
        {"Authorization": "Bearer " + "x" * 9000},
        {"X-API-Key": "noa_sk_nothing"},
        {"Authorization": "Bearer noacap1.e30.AAAA"},
    ):
        response = await server.client.get("/demo/read", headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert error_of(response)["type"] == "authentication_error"


async def test_capability_token_only_on_its_resource_and_actions(server: Any) -> None:
    admin = bearer(token("*"))
    minted = await server.client.post(
        "/v1/admin/capabilities",
        json={"resource": "thing:a", "actions": ["demo:read"], "ttl_s": 60},
        headers=admin,
    )
    assert minted.status_code == 201, minted.text
    cap = bearer(minted.json()["token"])
    assert (await server.client.get("/demo/things/a", headers=cap)).json() == {"thing": "a"}
    other = await server.client.get("/demo/things/b", headers=cap)
    assert other.status_code == 403
    assert "thing:a" in error_of(other)["message"]
    # The right action, but a route that names no resource.
    assert (await server.client.get("/demo/read", headers=cap)).status_code == 403
    # Another action on the same resource family.
    assert (await server.client.post("/demo/write", json={}, headers=cap)).status_code == 403


async def test_api_keys_from_the_admin_api_scope_and_revocation(
    noa_boot: Any, data_dir: str
) -> None:
    cfg = config(data_dir, api_key_cache_s=0.2)
    async with noa_boot(
        PLUGINS, config=cfg, extra_plugins={"demo": demo_plugin()}, environ=ENV
    ) as noa:
        admin = bearer(token("*"))
        created = await noa.client.post(
            "/v1/admin/keys", json={"name": "reader", "scopes": ["demo:read"]}, headers=admin
        )
        assert created.status_code == 201, created.text
        key = {"X-API-Key": created.json()["key"]}
        key_id = created.json()["id"]
        read = await noa.client.get("/demo/read", headers=key)
        assert read.json() == {"subject": f"key:{key_id}", "scheme": "api_key"}
        # The same key as a bearer credential.
        assert (await noa.client.get("/demo/read", headers=bearer(key["X-API-Key"]))).is_success
        narrow = await noa.client.post("/demo/write", json={}, headers=key)
        assert narrow.status_code == 403
        revoked = await noa.client.delete(f"/v1/admin/keys/{key_id}", headers=admin)
        assert revoked.status_code in (200, 204)
        await asyncio.sleep(0.3)  # longer than api_key_cache_s
        after = await noa.client.get("/demo/read", headers=key)
        assert after.status_code == 401
        assert "revoked" in error_of(after)["message"]


async def test_rate_limit_per_group_with_headers(server: Any) -> None:
    headers = bearer(token("demo:read", sub="limited"))
    answers = [await server.client.get("/demo/read", headers=headers) for _ in range(7)]
    assert [a.status_code for a in answers] == [200] * 5 + [429] * 2
    first, refused = answers[0], answers[5]
    assert first.headers["ratelimit-limit"] == "5"
    assert first.headers["ratelimit-remaining"] == "4"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-remaining"] == "0"
    assert error_of(refused)["code"] == "rate_limited"
    # Another subject has its own bucket; a group without a limit has none.
    assert (
        await server.client.get("/demo/read", headers=bearer(token("demo:read", sub="b")))
    ).is_success
    admin = bearer(token("*", sub="limited"))
    plugins = [await server.client.get("/v1/plugins", headers=admin) for _ in range(8)]
    assert all(p.status_code == 200 and "ratelimit-limit" not in p.headers for p in plugins)


def client_at(noa: Any, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=noa.app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://noa.test")


async def test_anonymous_loopback_only_from_this_machine(noa_boot: Any, data_dir: str) -> None:
    cfg = config(data_dir, anonymous="loopback", anonymous_scopes=["demo:read"])
    async with noa_boot(
        PLUGINS, config=cfg, extra_plugins={"demo": demo_plugin()}, environ=ENV
    ) as noa:
        local = await noa.client.get("/demo/read")
        assert local.json() == {"subject": "anonymous:127.0.0.1", "scheme": "anonymous"}
        # Only the anonymous scopes.
        assert (await noa.client.post("/demo/write", json={})).status_code == 403
        # A proxy on this machine forwarding someone else's request is not local.
        forwarded = await noa.client.get("/demo/read", headers={"X-Forwarded-For": "203.0.113.7"})
        assert forwarded.status_code == 401
        async with client_at(noa, "203.0.113.7") as remote:
            assert (await remote.get("/demo/read")).status_code == 401
            # Credentials still work from anywhere.
            assert (await remote.get("/demo/read", headers=bearer(token("demo:read")))).is_success


async def test_forwarded_addresses_believed_only_from_trusted_proxies(
    noa_boot: Any, data_dir: str
) -> None:
    cfg = config(data_dir, anonymous="loopback", trusted_proxies=["10.0.0.0/8"])
    async with (
        noa_boot(PLUGINS, config=cfg, extra_plugins={"demo": demo_plugin()}, environ=ENV) as noa,
        client_at(noa, "10.1.2.3") as proxy,
        client_at(noa, "198.51.100.1") as stranger,
    ):
        # The trusted proxy says the client was local: anonymous is allowed.
        via_proxy = await proxy.get("/demo/read", headers={"X-Forwarded-For": "127.0.0.1"})
        assert via_proxy.json()["subject"] == "anonymous:127.0.0.1"
        rfc7239 = await proxy.get("/demo/read", headers={"Forwarded": 'for="127.0.0.1:5555"'})
        assert rfc7239.is_success
        # A client further left cannot spoof past the proxy's own hop.
        spoof = await proxy.get("/demo/read", headers={"X-Forwarded-For": "127.0.0.1, 203.0.113.9"})
        assert spoof.status_code == 401
        # Anyone else claiming to forward for a local client is ignored.
        claim = await stranger.get("/demo/read", headers={"X-Forwarded-For": "127.0.0.1"})
        assert claim.status_code == 401


async def test_refusals_are_audited(server: Any) -> None:
    await server.client.get("/demo/read")
    eve = token("demo:read", sub="eve")
    await server.client.post("/demo/write", json={}, headers=bearer(eve))
    storage = server.kernel.state[STORAGE_STATE_KEY]
    rows: list[dict[str, Any]] = []
    for _ in range(100):
        rows = await storage.fetch(
            "SELECT actor, action, outcome, detail FROM noa_audit_event "
            "WHERE action = 'auth.refused' ORDER BY at"
        )
        if len(rows) >= 2:
            break
        await asyncio.sleep(0.05)
    assert [(r["actor"], r["outcome"]) for r in rows] == [
        ("ip:127.0.0.1", "denied"),
        (f"jwt:{ISSUER}#eve", "denied"),
    ]
    assert eve not in str(rows)  # credentials never reach the audit table


async def test_json_bodies_nested_too_deep_are_400_not_500(server: Any) -> None:
    writer = bearer(token("demo:read demo:write"))
    for depth in (65, 3000):
        body = "[" * depth + "]" * depth
        response = await server.client.post(
            "/demo/write",
            content=body,
            headers={**writer, "content-type": "application/json"},
        )
        assert response.status_code == 400, (depth, response.text)
        assert error_of(response)["code"] == "json_too_deep"
    ok = {"a": [[[1]]], "s": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}
    assert (await server.client.post("/demo/write", json=ok, headers=writer)).json() == ok


async def test_oversized_body_is_413(server: Any) -> None:
    writer = bearer(token("demo:read demo:write"))
    big = b'{"a": "' + b"x" * 1_100_000 + b'"}'
    response = await server.client.post(
        "/demo/write", content=big, headers={**writer, "content-type": "application/json"}
    )
    assert response.status_code == 413


async def test_an_api_keys_own_limit_and_daily_quota(server: Any) -> None:
    admin = bearer(token("*"))

    async def key_with(**limits: Any) -> dict[str, str]:
        body = {"name": "limited", "scopes": ["plugins:read"], **limits}
        created = await server.client.post("/v1/admin/keys", json=body, headers=admin)
        assert created.status_code == 201, created.text
        return {"X-API-Key": created.json()["key"]}

    limited = await key_with(rate_limit={"per_s": 0.001, "burst": 2})
    codes = [
        (await server.client.get("/v1/plugins", headers=limited)).status_code for _ in range(3)
    ]
    assert codes == [200, 200, 429]
    quota = await key_with(quota_per_day=3)
    answers = [await server.client.get("/v1/plugins", headers=quota) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert error_of(answers[-1])["code"] == "quota_exceeded"


async def test_redis_unreachable_limits_fail_open_and_authentication_fails_closed(
    noa_boot: Any, data_dir: str
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    cfg = config(data_dir)
    cfg["drivers"] = {"cache": "redis"}
    cfg["cache"] = {"redis_url": f"redis://127.0.0.1:{closed}/0", "redis_timeout_s": 0.2}
    async with noa_boot(
        PLUGINS, config=cfg, extra_plugins={"demo": demo_plugin()}, environ=ENV
    ) as noa:
        # The limiter decides from memory: calls are served, and the limit still holds.
        headers = bearer(token("demo:read", sub="during-outage"))
        codes = [
            (await noa.client.get("/demo/read", headers=headers)).status_code for _ in range(6)
        ]
        assert codes == [200] * 5 + [429]
        # Credentials are still checked: nothing bad gets in because Redis is gone.
        assert (await noa.client.get("/demo/read")).status_code == 401
        forged = jwt.encode(
            {"sub": "x", "scope": "*"}, "another-secret-0123456789abcdef01234", "HS256"
        )
        assert (await noa.client.get("/demo/read", headers=bearer(forged))).status_code == 401
        # A revocation made now still reaches this worker (through the database).
        victim = token("demo:read", sub="victim", jti="outage-jti")
        assert (await noa.client.get("/demo/read", headers=bearer(victim))).is_success
        revoked = await noa.client.post(
            "/v1/admin/tokens/revocations",
            json={"jti": "outage-jti", "expires_at": time.time() + 300},
            headers=bearer(token("*")),
        )
        assert revoked.status_code == 204, revoked.text
        await asyncio.sleep(0.6)
        assert (await noa.client.get("/demo/read", headers=bearer(victim))).status_code == 401


async def test_metrics_and_the_openapi_document_can_be_closed(noa_boot: Any, data_dir: str) -> None:
    cfg = config(data_dir)
    cfg["observability"] = {"metrics_public": False}
    cfg["http"] = {"openapi_public": False}
    async with noa_boot(PLUGINS, config=cfg, environ=ENV) as noa:
        for path, scope in (("/metrics", "metrics:read"), ("/schema/openapi.json", "docs:read")):
            assert (await noa.client.get(path)).status_code == 401, path
            assert (
                await noa.client.get(path, headers=bearer(token("demo:read")))
            ).status_code == 403
            assert (await noa.client.get(path, headers=bearer(token(scope)))).status_code == 200
        # The probes stay open.
        assert (await noa.client.get("/ready")).status_code == 200
