"""``/ws/events``, ``/ws/stream`` and ``/v1/events`` through a real ``noa serve`` on the
embedded profile (callers on this machine act as anonymous with every scope)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import httpx
import numpy as np
import pytest
import websockets

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(servers: Any, model_repository: Any) -> Any:
    started = servers(
        "embedded",
        {
            "NOA_INFERENCE__REPOSITORY": str(model_repository),
            "NOA_STREAMING__PING_INTERVAL_S": "0.5",
            "NOA_STREAMING__IDLE_TIMEOUT_S": "3",
            "NOA_STREAMING__MAX_FRAME_BYTES": "65536",
            "NOA_STREAMING__SEND_BUFFER": "8",
            "NOA_STREAMING__SSE_HEARTBEAT_S": "0.3",
        },
    )
    started.wait_ready()
    return started


async def test_a_subscriber_sees_a_task_queued_started_and_succeeded(
    server: Any, connect: Any, receive: Any
) -> None:
    ws = await connect(server.ws + "/ws/events")
    async with ws:
        await ws.send(json.dumps({"type": "subscribe", "topic": "tasks", "id": "s1"}))
        assert await receive(ws) == {"type": "subscribed", "id": "s1", "topic": "tasks"}
        async with httpx.AsyncClient(base_url=server.url) as client:
            created = await client.post(
                "/v1/tasks", json={"type": "embed", "input": {"input": ["a river"]}}
            )
            assert created.status_code == 201, created.text
        task_id = created.json()["id"]
        seen = []
        while not seen or seen[-1]["event"]["state"] not in ("succeeded", "dead"):
            frame = await receive(ws)
            assert frame["type"] == "event" and frame["topic"] == "tasks"
            if frame["event"]["id"] == task_id:
                seen.append(frame)
        assert [f["event"]["event"] for f in seen] == ["queued", "started", "succeeded"]
        seqs = [f["seq"] for f in seen]
        assert seqs == sorted(seqs) and seqs[0] >= 1
        # The same task by its own topic: finished, so nothing more comes; unsubscribing works.
        await ws.send(json.dumps({"type": "subscribe", "topic": f"tasks.{task_id}"}))
        assert (await receive(ws))["topic"] == f"tasks.{task_id}"
        await ws.send(json.dumps({"type": "unsubscribe", "topic": "tasks"}))
        assert await receive(ws) == {"type": "unsubscribed", "topic": "tasks"}


async def test_embed_over_the_stream_socket_equals_rest(
    server: Any, connect: Any, receive: Any
) -> None:
    texts = ["the river flows", "a cat sleeps on the mat"]
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        rest = (await client.post("/v1/embed", json={"input": texts})).json()
        infer_body = {
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hi"]}]
        }
        rest_infer = (await client.post("/v1/infer", json=infer_body)).json()
        missing = {"input": ["x"], "model": "no-such-model"}
        refused = await client.post("/v1/embed", json=missing)
    ws = await connect(server.ws + "/ws/stream")
    async with ws:
        # Several in flight on one connection; answers carry the ids they answer.
        await ws.send(json.dumps({"type": "embed", "id": "both", "input": texts}))
        await ws.send(json.dumps({"type": "embed", "id": 2, "input": texts[1]}))
        await ws.send(json.dumps({"type": "infer", "id": "t", **infer_body}))
        await ws.send(json.dumps({"type": "embed", "id": "bad", **missing}))
        answers = {}
        while len(answers) < 4:
            frame = await receive(ws, wait_s=60)
            answers[frame["id"]] = frame
    both = answers["both"]
    assert both["type"] == "result" and both["status"] == 200
    # The same answer as REST; vectors equal up to float rounding (batched differently).
    vectors = both["result"].pop("embeddings")
    assert both["result"] == {k: v for k, v in rest.items() if k != "embeddings"}
    np.testing.assert_allclose(vectors, rest["embeddings"], atol=1e-5)
    np.testing.assert_allclose(
        answers[2]["result"]["embeddings"], [rest["embeddings"][1]], atol=1e-5
    )
    assert answers["t"]["result"]["model"] == rest_infer["model"]
    output, expected = answers["t"]["result"]["outputs"][0], rest_infer["outputs"][0]
    assert output["shape"] == expected["shape"] == [1, 384]
    np.testing.assert_allclose(output["data"], expected["data"], atol=1e-5)
    # A request REST refuses is refused the same way.
    bad = answers["bad"]
    assert (bad["type"], bad["status"]) == ("error", refused.status_code)
    assert (bad["code"], bad["message"]) == (
        refused.json()["error"]["code"],
        refused.json()["error"]["message"],
    )


async def test_bad_frames_get_error_frames_and_the_connection_stays(
    server: Any, connect: Any, receive: Any
) -> None:
    ws = await connect(server.ws + "/ws/events")
    async with ws:
        await ws.send("not json")
        assert (await receive(ws))["code"] == "bad_json"
        await ws.send(json.dumps([1, 2]))
        assert (await receive(ws))["code"] == "bad_frame"
        await ws.send(json.dumps({"type": "dance", "id": 7}))
        assert await receive(ws) == {
            "type": "error",
            "code": "unknown_type",
            "id": 7,
            "message": "unknown frame type 'dance': /ws/events takes subscribe, unsubscribe, ping and pong",
        }
        await ws.send(b"\x00\x01")
        assert (await receive(ws))["code"] == "binary_frame"
        await ws.send(json.dumps({"type": "subscribe", "topic": "nonsense.x"}))
        error = await receive(ws)
        assert (error["code"], error["status"], error["topic"]) == (
            "unknown_topic",
            400,
            "nonsense.x",
        )
        await ws.send(json.dumps({"type": "ping", "id": "still-here"}))
        assert await receive(ws) == {"type": "pong", "id": "still-here"}
        # Too large: closed with 1009, not an error frame.
        await ws.send(json.dumps({"type": "ping", "pad": "x" * 70_000}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await receive(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    stream = await connect(server.ws + "/ws/stream")
    async with stream:
        await stream.send(json.dumps({"type": "embed", "input": ["no id"]}))
        assert (await receive(stream))["code"] == "bad_frame"
        await stream.send(json.dumps({"type": "search", "id": 1}))
        assert (await receive(stream))["code"] == "unknown_type"


async def test_a_client_that_answers_nothing_is_closed_as_idle(
    server: Any, connect: Any, receive: Any
) -> None:
    async with websockets.connect(server.ws + "/ws/events") as ws:
        await ws.send(json.dumps({"type": "subscribe", "topic": "models"}))
        frames = []
        with contextlib.suppress(websockets.ConnectionClosed):
            async for text in ws:  # never answers the pings
                frames.append(json.loads(text))
    assert ws.close_code == 4408
    assert [f["type"] for f in frames[:2]] == ["ready", "subscribed"]
    assert {f["type"] for f in frames[2:]} == {"ping"}


async def test_a_slow_consumer_gets_a_gap_marker(server: Any, connect: Any, receive: Any) -> None:
    # The client stops reading: its TCP buffers fill, then the server's send buffer
    # (8 events here) overflows and the oldest events are dropped.
    ws = await connect(server.ws + "/ws/events", max_queue=1)
    async with ws:
        await ws.send(json.dumps({"type": "subscribe", "topic": "plugins.flood"}))
        assert (await receive(ws))["type"] == "subscribed"
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            published = await client.post("/v1/flood", json={"n": 300, "size": 100_000})
            assert published.status_code == 200, published.text
        frames = []
        while not frames or frames[-1].get("event", {}).get("i") != 299:
            frames.append(await receive(ws, wait_s=60))
    gaps = [f for f in frames if f["type"] == "gap"]
    events = [f for f in frames if f["type"] == "event"]
    assert gaps and all(g["dropped"] > 0 for g in gaps)
    assert len(events) + sum(g["dropped"] for g in gaps) == 300
    assert events[-1]["seq"] == 300  # sequence numbers count the dropped events too
    # Where a gap is, the sequence numbers skip exactly the events it says were dropped.
    for before, gap, after in zip(frames, frames[1:], frames[2:], strict=False):
        if gap["type"] == "gap" and before["type"] == after["type"] == "event":
            assert after["seq"] - before["seq"] - 1 == gap["dropped"]


async def test_server_sent_events_carry_the_same_topics(
    server: Any, connect: Any, receive: Any
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        unknown = await client.get("/v1/events", params={"topic": "nope"})
        assert (unknown.status_code, unknown.json()["error"]["code"]) == (400, "unknown_topic")
        async with client.stream(
            "GET", "/v1/events", params={"topic": ["plugins.flood", "models"]}
        ) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            assert await anext(lines) == "event: ready"
            ready = json.loads((await anext(lines)).removeprefix("data: "))
            assert ready == {"type": "ready", "topics": ["plugins.flood", "models"]}
            await client.post("/v1/flood", json={"n": 2})
            got: list[str] = []
            while sum(line.startswith("data: ") for line in got) < 2 or ": keep-alive" not in got:
                got.append(await anext(lines))
    data = [json.loads(line.removeprefix("data: ")) for line in got if line.startswith("data: ")]
    assert [(d["topic"], d["seq"], d["event"]["i"]) for d in data] == [
        ("plugins.flood", 1, 0),
        ("plugins.flood", 2, 1),
    ]
    assert "id: 1" in got and "event: event" in got
