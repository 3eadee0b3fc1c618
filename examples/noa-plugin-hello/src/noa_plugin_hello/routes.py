"""The plugin's HTTP routes."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, JSONBody
from noa.plugin_sdk import Host, Unprocessable

from noa_plugin_hello.config import HelloConfig


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


def handlers(host: Host) -> list[HTTPRouteHandler]:
    config = host.section("hello", HelloConfig)
    greeter: Any = host.driver("greeter")()

    @get("/v1/hello/{name:str}", sync_to_thread=False, summary="Greet by path")
    def hello(name: FromPath[str]) -> Greeting:
        return Greeting(message=greeter.greet(config.greeting, name), language="en", tags=[])

    @post("/v1/hello/greet", sync_to_thread=False, summary="Greet from a JSON body")
    def greet(data: JSONBody[GreetRequest]) -> Greeting:
        """Validated JSON in, a greeting out. 400 names the field that is wrong."""
        if data.name.strip() != data.name:
            raise Unprocessable("name must not start or end with spaces", param="name")
        message = " ".join([greeter.greet(config.greeting, data.name)] * data.repeat)
        return Greeting(message=message, language=data.language, tags=data.tags)

    return [hello, greet]
