"""Two server processes on one NATS: an event published in one reaches a WebSocket
client connected to the other."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.nats]


async def test_an_event_published_in_one_server_reaches_a_client_of_the_other(
    servers: Any, connect: Any, receive: Any
) -> None:
    tag = uuid.uuid4().hex[:12]
    env = {
        "NOA_DRIVERS__BROKER": "nats",
        "NOA_BROKER__NATS_STREAM": f"NOATEST_{tag}",
        "NOA_BROKER__SUBJECT_PREFIX": f"noatest{tag}",
    }
    one, other = servers("one", env), servers("other", env)
    one.wait_ready()
    other.wait_ready()
    ws = await connect(one.ws + "/ws/events")
    async with ws:
        await ws.send(json.dumps({"type": "subscribe", "topic": "plugins.flood"}))
        assert (await receive(ws))["type"] == "subscribed"
        async with httpx.AsyncClient(base_url=other.url) as client:
            assert (await client.post("/v1/flood", json={"n": 3})).status_code == 200
        frames = [await receive(ws) for _ in range(3)]
    assert [(f["type"], f["seq"], f["event"]["i"]) for f in frames] == [
        ("event", 1, 0),
        ("event", 2, 1),
        ("event", 3, 2),
    ]
