"""Credentials and scopes on the streaming endpoints, through a real ``noa serve`` whose
auth plugin requires credentials (``auth.anonymous = "off"``) and real API keys."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import httpx
import pytest
import websockets

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def keyed(servers: Any, run_noa: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("auth")
    run_noa(folder, "migrate", "apply")

    def key(name: str, *scopes: str) -> str:
        args = [arg for scope in scopes for arg in ("--scope", scope)]
        return str(json.loads(run_noa(folder, "keys", "create", name, *args, "--json"))["key"])

    keys = {
        "full": key("full", "events:subscribe", "tasks:read", "plugins:events", "inference:invoke"),
        "events_only": key("events-only", "events:subscribe"),
        "limited": key("limited", "events:subscribe", "inference:invoke"),
    }
    server = servers(
        "auth",
        {
            "NOA_AUTH__ANONYMOUS": "off",
            "NOA_STREAMING__AUTH_TIMEOUT_S": "1",
            # /ws/stream connects (route group "stream"): two, then none for 1000 s.
            "NOA_AUTH__RATE_LIMITS": '{"stream": {"per_s": 0.001, "burst": 2}}',
        },
        folder=folder,
    )
    server.wait_ready()
    server.keys = keys
    return server


async def closed_with(ws: Any) -> tuple[int, list[dict[str, Any]]]:
    """The close code, and the frames that came before it."""
    frames = []
    with contextlib.suppress(websockets.ConnectionClosed):
        async for text in ws:  # until the server closes
            frames.append(json.loads(text))
    assert ws.close_code is not None
    return ws.close_code, frames


async def test_no_credential_is_refused_with_4401(keyed: Any) -> None:
    # Sending a frame without credentials: decided at once.
    async with websockets.connect(keyed.ws + "/ws/events") as ws:
        await ws.send(json.dumps({"type": "subscribe", "topic": "models"}))
        code, frames = await closed_with(ws)
    assert code == 4401
    assert frames == [
        {
            "type": "error",
            "code": "missing_credentials",
            "message": "credentials required: send 'Authorization: Bearer <token>' or 'X-API-Key: <key>'",
            "status": 401,
        }
    ]
    # Sending nothing: decided when auth_timeout_s (1 s here) has passed.
    async with websockets.connect(keyed.ws + "/ws/stream") as ws:
        assert (await closed_with(ws))[0] == 4401
    # A credential the server does not know, in the first frame.
    async with websockets.connect(keyed.ws + "/ws/events") as ws:
        await ws.send(json.dumps({"type": "auth", "token": "noa_sk_forged"}))
        assert (await closed_with(ws))[0] == 4401


@pytest.mark.parametrize("way", ["header", "subprotocol", "first-frame"])
async def test_a_key_is_accepted_in_each_way(keyed: Any, way: str, receive: Any) -> None:
    key = keyed.keys["full"]
    options: dict[str, Any] = {}
    if way == "header":
        options["additional_headers"] = {"Authorization": f"Bearer {key}"}
    elif way == "subprotocol":
        options["subprotocols"] = ["noa.v1", f"bearer.{key}"]
    async with websockets.connect(keyed.ws + "/ws/events", **options) as ws:
        if way == "first-frame":
            await ws.send(json.dumps({"type": "auth", "token": key}))
        ready = await receive(ws)
        assert ready["type"] == "ready" and ready["subject"].startswith("key:")
        # Only the protocol name is echoed, never the credential.
        assert ws.subprotocol == ("noa.v1" if way == "subprotocol" else None)
        await ws.send(json.dumps({"type": "subscribe", "topic": "plugins.flood"}))
        assert (await receive(ws))["type"] == "subscribed"


async def test_a_topic_without_its_scope_is_refused_and_the_connection_stays(
    keyed: Any, receive: Any
) -> None:
    headers = {"Authorization": f"Bearer {keyed.keys['events_only']}"}
    async with websockets.connect(keyed.ws + "/ws/events", additional_headers=headers) as ws:
        assert (await receive(ws))["type"] == "ready"
        await ws.send(json.dumps({"type": "subscribe", "topic": "tasks", "id": 1}))
        assert await receive(ws) == {
            "type": "error",
            "code": "insufficient_scope",
            "id": 1,
            "message": "the topic 'tasks' needs the scope 'tasks:read', which the credential lacks",
            "status": 403,
            "topic": "tasks",
        }
        await ws.send(json.dumps({"type": "ping"}))
        assert (await receive(ws))["type"] == "pong"
    # /ws/stream needs inference:invoke at connect.
    async with websockets.connect(keyed.ws + "/ws/stream", additional_headers=headers) as ws:
        code, frames = await closed_with(ws)
    assert code == 4403 and frames[0]["code"] == "insufficient_scope"
    # The SSE route: the route's scope by the HTTP core, the topic's by the handler.
    async with httpx.AsyncClient(base_url=keyed.url, headers=headers) as client:
        refused = await client.get("/v1/events", params={"topic": "tasks"})
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "insufficient_scope")
    async with httpx.AsyncClient(base_url=keyed.url) as client:
        anonymous = await client.get("/v1/events", params={"topic": "models"})
        assert anonymous.status_code == 401


async def test_a_connect_past_the_rate_limit_is_refused_with_4429(keyed: Any, receive: Any) -> None:
    headers = {"X-API-Key": keyed.keys["limited"]}
    for _ in range(2):
        async with websockets.connect(keyed.ws + "/ws/stream", additional_headers=headers) as ws:
            assert (await receive(ws))["type"] == "ready"
    async with websockets.connect(keyed.ws + "/ws/stream", additional_headers=headers) as ws:
        code, frames = await closed_with(ws)
    assert code == 4429
    assert [(f["type"], f["code"], f["status"]) for f in frames] == [("error", "rate_limited", 429)]
    # The reason says when to come back.
    assert ws.close_reason.endswith("(retry after 1000 s)"), ws.close_reason
    # The limit is the route group's: the same key still connects to /ws/events.
    async with websockets.connect(keyed.ws + "/ws/events", additional_headers=headers) as ws:
        assert (await receive(ws))["type"] == "ready"
