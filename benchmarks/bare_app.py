"""A bare Litestar app: the baseline ``http_overhead.py`` compares NOA against.

It serves the same bodies as NOA's ``GET /health`` and the hello plugin's validated
``POST /v1/hello/greet`` (same msgspec Struct, same logic) with no plugins, no
middleware and no kernel. Served by granian in factory mode, like ``noa serve``::

    .venv/bin/granian --interface asgi --factory --no-access-log benchmarks.bare_app:create_app
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec
from litestar import Litestar, get, post
from litestar.exceptions import HTTPException


class Health(msgspec.Struct, frozen=True):
    status: str
    timestamp: str


class GreetRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    language: Annotated[str, msgspec.Meta(pattern="^[a-z]{2}$")] = "en"
    tags: Annotated[list[str], msgspec.Meta(max_length=16)] = []
    repeat: Annotated[int, msgspec.Meta(ge=1, le=10)] = 1
    metadata: dict[str, str] = {}


class Greeting(msgspec.Struct, frozen=True):
    message: str
    language: str
    tags: list[str]


GREETING = "Hello"


@get("/health", sync_to_thread=False)
def health() -> Health:
    return Health(status="ok", timestamp=datetime.now(UTC).isoformat())


@post("/v1/hello/greet", sync_to_thread=False)
def greet(data: GreetRequest) -> Greeting:
    if data.name.strip() != data.name:
        raise HTTPException(status_code=422, detail="name must not start or end with spaces")
    message = " ".join([f"{GREETING}, {data.name}!"] * data.repeat)
    return Greeting(message=message, language=data.language, tags=data.tags)


def create_app() -> Litestar:
    """granian factory, as ``noa.kernel.asgi:create_app`` is for NOA."""
    return Litestar(route_handlers=[health, greet])
