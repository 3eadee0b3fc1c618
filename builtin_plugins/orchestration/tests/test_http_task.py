"""The ``http_request`` task type against a real HTTP server on 127.0.0.1: outputs,
the host allow-list, retried 5xx and connection errors, size caps, no redirects."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from noa.builtin_plugins.orchestration.http_task import host_allowed

Upstream = tuple[str, Counter[str]]


async def _answer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hits: Counter[str]
) -> None:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    method, path, _ = head[0].split(" ", 2)
    headers = dict(line.lower().split(": ", 1) for line in head[1:] if ": " in line)
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    hits[path] += 1
    status, kind, content, extra = 200, "application/json", b"", ""
    if path == "/echo":
        seen = {"method": method, "body": body.decode(), "type": headers.get("content-type"),
                "token": headers.get("x-token")}  # fmt: skip
        content = json.dumps(seen).encode()
    elif path == "/flaky":
        status = 503 if hits[path] < 3 else 200
        content = b'{"ok": true}'
    elif path == "/down":
        status = 500
    elif path == "/missing":
        status, content = 404, b'{"error": "no"}'
    elif path == "/big":
        kind, content = "text/plain", b"x" * 5000
    elif path == "/binary":
        kind, content = "application/octet-stream", bytes(range(256))
    elif path == "/redirect":
        status, extra = 302, "location: http://elsewhere.example/\r\n"
    reason = {200: "OK", 302: "Found", 404: "Not Found", 500: "Error", 503: "Busy"}[status]
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: {kind}\r\ncontent-length: {len(content)}"
        f"\r\n{extra}connection: close\r\n\r\n".encode()
        + content
    )
    await writer.drain()
    writer.close()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    hits: Counter[str] = Counter()
    server = await asyncio.start_server(lambda r, w: _answer(r, w, hits), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}", hits


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


ALLOW = {"http_allowed_hosts": ["127.0.0.1"], "http_max_response_bytes": 1000}


async def test_a_request_runs_and_its_answer_is_the_output(
    serve: Any, submit: Any, finished: Any, upstream: Upstream
) -> None:
    base, hits = upstream
    async with serve({}, **ALLOW) as noa:
        posted = await submit(noa, type="http_request", input={
            "url": f"{base}/echo", "method": "POST", "json": {"a": 1},
            "headers": {"x-token": "t"}})  # fmt: skip
        done = await finished(noa, posted["id"])
        assert done["state"] == "succeeded", done
        out = done["output"]
        assert (out["status"], out["truncated"], out["headers"]["content-type"]) == (
            200, False, "application/json")  # fmt: skip
        assert out["json"] == {"method": "POST", "body": '{"a":1}', "type": "application/json",
                               "token": "t"}  # fmt: skip
        # 4xx is an answer, not a failure; redirects are not followed.
        for path, status in (("/missing", 404), ("/redirect", 302)):
            task = await submit(noa, type="http_request", input={"url": base + path})
            done = await finished(noa, task["id"])
            assert (done["state"], done["output"]["status"]) == ("succeeded", status)
        assert done["output"]["headers"]["location"] == "http://elsewhere.example/"
        big = await finished(noa, (await submit(noa, type="http_request",
                                                input={"url": f"{base}/big"}))["id"])  # fmt: skip
        assert (big["output"]["truncated"], len(big["output"]["body"])) == (True, 1000)
        raw = await finished(noa, (await submit(noa, type="http_request",
                                                input={"url": f"{base}/binary"}))["id"])  # fmt: skip
        assert "body_base64" in raw["output"] and "body" not in raw["output"]
        assert hits["/echo"] == 1


async def test_5xx_and_unreachable_hosts_are_retried(
    serve: Any, submit: Any, finished: Any, upstream: Upstream
) -> None:
    base, hits = upstream
    async with serve({}, **ALLOW) as noa:
        flaky = await submit(noa, type="http_request", input={"url": f"{base}/flaky"})
        done = await finished(noa, flaky["id"])
        assert (done["state"], done["attempts"], done["output"]["json"]) == (
            "succeeded", 3, {"ok": True})  # fmt: skip
        down = await submit(noa, type="http_request", input={"url": f"{base}/down"},
                            max_retries=1)  # fmt: skip
        dead = await finished(noa, down["id"])
        assert (dead["state"], dead["attempts"], dead["error"]["code"]) == (
            "dead",
            2,
            "http_status",
        )
        assert "500" in dead["error"]["message"]
        gone = await submit(noa, type="http_request", max_retries=1,
                            input={"url": f"http://127.0.0.1:{_closed_port()}/"})  # fmt: skip
        dead = await finished(noa, gone["id"])
        assert (dead["state"], dead["attempts"], dead["error"]["code"]) == (
            "dead", 2, "http_unreachable")  # fmt: skip
        assert hits["/down"] == 2


async def test_hosts_off_the_allow_list_fail_at_once(
    serve: Any, submit: Any, finished: Any, upstream: Upstream
) -> None:
    base, hits = upstream
    async with serve({}) as noa:  # the default: no host allowed
        task = await submit(noa, type="http_request", input={"url": f"{base}/echo"})
        dead = await finished(noa, task["id"])
        assert (dead["state"], dead["attempts"], dead["error"]["code"]) == (
            "dead", 1, "host_not_allowed")  # fmt: skip
        assert "'127.0.0.1'" in dead["error"]["message"]
        assert "orchestration.http_allowed_hosts" in dead["error"]["message"]
        assert hits["/echo"] == 0
        for bad in ({"url": "ftp://127.0.0.1/"}, {"url": "http:///x"},
                    {"url": f"{base}/", "body": "a", "json": 1}, {"url": base, "method": "BREW"}):  # fmt: skip
            response = await noa.client.post("/v1/tasks", json={"type": "http_request",
                                                                 "input": bad})  # fmt: skip
            assert response.status_code == 422, (bad, response.text)


def test_the_allow_list_names_hosts_or_their_subdomains() -> None:
    allowed = ("api.example.com", "*.internal.test")
    assert host_allowed("API.example.com", allowed)
    assert host_allowed("a.b.internal.test", allowed)
    assert not host_allowed("internal.test", allowed)
    assert not host_allowed("evilinternal.test", allowed)
    assert not host_allowed("example.com", allowed)
    assert not host_allowed("api.example.com.evil.org", allowed)
    assert not host_allowed("anything", ())
