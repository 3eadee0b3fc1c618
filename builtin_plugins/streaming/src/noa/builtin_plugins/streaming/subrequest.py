"""A request made on a WebSocket's behalf to one of the server's own REST routes.

``/ws/stream`` does not reimplement embedding or inference: each request frame becomes
an in-process ASGI request to the route that serves it over REST (``POST /v1/embed``
...), in the same Litestar app, and the route's JSON answer becomes the result frame.
So a request over the WebSocket is validated, authorised (the route's scope and rate
limit, by the same policy, with the connection's credential), served and reported
exactly as over REST, by the same handler and service objects, and a plugin that
changes the route changes both. No bytes cross a socket: the request body is the
frame, the response body goes into the result frame unparsed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from litestar import Litestar

__all__ = ["Answer", "call_route"]


class Answer:
    """A route's response: status, content type and the body."""

    __slots__ = ("body", "content_type", "status")

    def __init__(self, status: int, content_type: str, body: bytes) -> None:
        self.status = status
        self.content_type = content_type
        self.body = body


async def call_route(
    app: Litestar,
    connection: Mapping[str, Any],
    *,
    method: str,
    path: str,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    request_id: str,
) -> Answer:
    """Run ``method path`` with ``body`` (JSON) in ``app`` as the WebSocket
    ``connection``'s client, presenting ``headers`` (the connection's credential).
    Cancelling the caller cancels the route's handler (which sees its client gone)."""
    scheme = "https" if connection.get("scheme") == "wss" else "http"
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            *headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": connection.get("client"),
        "server": connection.get("server"),
        "state": {"request_id": request_id},
        "extensions": {},
    }
    sent_body = False
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await never.wait()  # the client stays until the request ends (or is cancelled)
        return {"type": "http.disconnect"}

    status = 500
    content_type = ""
    chunks: list[bytes] = []

    async def send(message: Mapping[str, Any]) -> None:
        nonlocal status, content_type
        if message["type"] == "http.response.start":
            status = int(message["status"])
            for name, value in message.get("headers") or ():
                if name.lower() == b"content-type":
                    content_type = value.decode("latin-1")
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)  # type: ignore[arg-type]
    return Answer(status, content_type, b"".join(chunks))
