"""The limits of the streaming endpoints through real ``noa serve`` processes on the
embedded profile: the ``close`` slow-consumer policy, ``max_connections``, and a
``cancel`` frame ending a request in flight on ``/ws/stream``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import pytest
import websockets

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def bounded(servers: Any) -> Any:
    """Two WebSockets at most, and a slow reader is closed (no model needed)."""
    started = servers(
        "bounded",
        {
            "NOA_STREAMING__MAX_CONNECTIONS": "2",
            "NOA_STREAMING__SEND_BUFFER": "8",
            "NOA_STREAMING__SLOW_CONSUMER": "close",
        },
    )
    started.wait_ready()
    return started


@pytest.fixture(scope="module")
def batching(servers: Any, model_repository: Any) -> Any:
    """A lone embedding waits the longest batching delay (1 s) for others to join it,
    so a request stays in flight while the client cancels it."""
    started = servers(
        "batching",
        {
            "NOA_INFERENCE__REPOSITORY": str(model_repository),
            "NOA_INFERENCE__MAX_QUEUE_DELAY_MS": "1000",
        },
    )
    started.wait_ready()
    return started


async def open_sockets(server: Any) -> float:
    """The WebSockets the server holds open, as its metrics count them."""
    async with httpx.AsyncClient(base_url=server.url) as client:
        text = (await client.get("/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("streaming_connections{")
        and any(f'endpoint="{e}"' in line for e in ("events", "stream"))
    )


async def until_open(server: Any, count: int) -> None:
    """Until the server counts ``count`` open WebSockets (a client's close reaches it a
    moment after the client saw it)."""
    for _ in range(300):
        if await open_sockets(server) == count:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"the server still counts {await open_sockets(server)} WebSockets, not {count}")


async def closed_with(ws: Any, receive: Any) -> tuple[int, str, list[dict[str, Any]]]:
    """The close code and reason, and the frames (less pings) that came before it."""
    frames = []
    with contextlib.suppress(websockets.ConnectionClosed):
        while True:
            frames.append(await receive(ws, wait_s=60))
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason, frames


async def test_a_reader_too_slow_is_closed_with_1008(
    bounded: Any, connect: Any, receive: Any
) -> None:
    await until_open(bounded, 0)
    # Events come faster than the client takes them (it buffers one frame): the
    # server's send buffer (8 events) overflows and, with slow_consumer = "close", the
    # connection ends instead of dropping events.
    ws = await connect(bounded.ws + "/ws/events", max_queue=1)
    async with ws:
        await ws.send(json.dumps({"type": "subscribe", "topic": "plugins.flood"}))
        assert (await receive(ws))["type"] == "subscribed"
        async with httpx.AsyncClient(base_url=bounded.url, timeout=60) as client:
            published = await client.post("/v1/flood", json={"n": 300, "size": 100_000})
            assert published.status_code == 200, published.text
        code, reason, frames = await closed_with(ws, receive)
    assert code == 1008 and "slow consumer" in reason
    # What came before the close (maybe nothing: the flood can fill the buffer before
    # the first send): events in order, no gap marker, and not all of them.
    assert {f["type"] for f in frames} <= {"event"}
    ticks = [f["event"]["i"] for f in frames]
    assert ticks == list(range(len(ticks))) and len(ticks) < 300


async def test_past_max_connections_a_websocket_is_closed_with_1013(
    bounded: Any, connect: Any, receive: Any
) -> None:
    await until_open(bounded, 0)
    first = await connect(bounded.ws + "/ws/events")
    second = await connect(bounded.ws + "/ws/stream")  # the bound counts both endpoints
    async with first, second:
        async with websockets.connect(bounded.ws + "/ws/events") as third:
            code, reason, frames = await closed_with(third, receive)
        assert (code, frames) == (1013, [])
        assert "limit" in reason
        # The two admitted are served as before.
        await first.send(json.dumps({"type": "ping", "id": 1}))
        assert await receive(first) == {"type": "pong", "id": 1}
    # Once they are gone, a new one is admitted.
    await until_open(bounded, 0)
    again = await connect(bounded.ws + "/ws/events")
    await again.close()


async def test_a_cancel_frame_ends_a_request_in_flight(
    batching: Any, connect: Any, receive: Any
) -> None:
    ws = await connect(batching.ws + "/ws/stream")
    async with ws:
        await ws.send(json.dumps({"type": "embed", "id": "slow", "input": ["a lone text"]}))
        await ws.send(json.dumps({"type": "cancel", "id": "slow"}))
        assert await receive(ws) == {
            "type": "error",
            "code": "cancelled",
            "id": "slow",
            "message": "cancelled by the client",
            "status": 499,
        }
        # Cancelled, it is no longer in flight: its id may be used again, and its
        # answer never comes (the next frame answers the new request).
        await ws.send(json.dumps({"type": "cancel", "id": "slow"}))
        gone = await receive(ws)
        assert (gone["type"], gone["code"], gone["id"]) == ("error", "not_in_flight", "slow")
        await ws.send(json.dumps({"type": "embed", "id": "slow", "input": ["a lone text"]}))
        answer = await receive(ws, wait_s=60)
        assert (answer["type"], answer["id"], answer["status"]) == ("result", "slow", 200)
        assert answer["result"]["dimensions"] == 384
