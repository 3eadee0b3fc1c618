"""Values for the transport hooks: route groups and middleware.

ASGI is described with plain callables so the SDK needs no web framework; the HTTP core
plugin mounts handlers with Litestar.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec

__all__ = ["ASGIApp", "Middleware", "Receive", "RouteGroup", "Scope", "Send"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RouteGroup(msgspec.Struct, frozen=True, kw_only=True):
    """Route handlers a plugin contributes, mounted under ``path``.

    ``handlers`` are Litestar route handlers, controllers or routers. ``probe`` marks
    routes that must answer even when the server is saturated (health, readiness,
    metrics): they skip admission control and the request timeout. ``tags`` group the
    routes in the OpenAPI document. ``error_body`` writes the errors the HTTP core itself
    answers on these routes (503 at capacity, 504 past the request timeout) in another
    shape, for protocols with their own (KServe's ``{"error": "..."}``).

    ``scope`` is what a caller needs to reach these routes (``"inference:invoke"``); a
    handler's ``opt={SCOPE_OPT: ...}`` overrides it (see ``noa.plugin_sdk.auth``). A
    group that declares none needs ``"*"``: closed by default. ``public`` routes need no
    credentials at all; so do probe routes that declare no scope (health, readiness).
    """

    handlers: tuple[Any, ...]
    path: str = "/"
    probe: bool = False
    tags: tuple[str, ...] = ()
    # ``error_body(status, message)`` returns a JSON body; None: the standard body.
    error_body: Callable[[int, str], bytes] | None = None
    scope: str | None = None
    public: bool = False


class Middleware(msgspec.Struct, frozen=True, kw_only=True):
    """ASGI middleware: ``factory(app)`` returns the wrapping app.

    It runs inside the HTTP core's request-id layer (``scope["state"]["request_id"]`` is
    set) and outside admission control and the request timeout, so it sees every
    response, the core's own 503 and 504 included. Once the response has started,
    ``scope["state"]["status"]`` holds its status code: read it rather than wrapping
    ``send``.
    """

    factory: Callable[[ASGIApp], ASGIApp]
