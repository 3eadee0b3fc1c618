"""Values for the transport hooks: route groups, middleware and gRPC services.

ASGI is described with plain callables so the SDK needs no web framework; the HTTP core
plugin mounts handlers with Litestar. gRPC services are described the same way, so the
SDK needs no grpcio; the gRPC plugin serves them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import msgspec

__all__ = ["ASGIApp", "GrpcService", "Middleware", "Receive", "RouteGroup", "Scope", "Send"]

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


class GrpcService(msgspec.Struct, frozen=True, kw_only=True):
    """A gRPC service a plugin contributes through ``noa_register_grpc_services``.

    ``name`` is the service's full name (``"noa.v1.InferenceService"``), ``servicer``
    the object implementing it (grpc.aio: ``async def Method(self, request, context)``)
    and ``add_to_server`` the generated ``add_<Service>Servicer_to_server`` function.

    ``scopes`` maps each method name to the scope a caller needs, as REST routes declare
    theirs (``{"Embed": "inference:invoke"}``); a method not named needs ``scope``, and
    with neither it needs ``"*"``: closed by default. ``resources`` maps a method taking
    one request to a function of that request naming the resource it touches
    (``{"ModelInfer": lambda r: f"model:{r.model_name}"}``), as a REST handler's
    ``RESOURCE_OPT`` does: a capability token for that resource is accepted there, and
    refused on a method naming none. ``group`` names the rate-limit
    group (``auth.rate_limits``), by default the name the service was registered under;
    give the REST route group's name to share its limit. ``health_checks`` names the
    readiness checks (``noa_register_health_checks``) the service depends on: its
    ``grpc.health.v1`` status is SERVING while none of them fails; with none named it
    follows the whole server's readiness (``/ready``).

    Servicers raise :class:`~noa.plugin_sdk.errors.ApiError` subclasses as REST handlers
    do; the gRPC plugin answers them with the matching status code and the message.
    """

    name: str
    servicer: Any
    add_to_server: Callable[[Any, Any], None]
    scopes: Mapping[str, str] = msgspec.field(default_factory=dict)
    scope: str | None = None
    resources: Mapping[str, Callable[[Any], str | None]] = msgspec.field(default_factory=dict)
    group: str | None = None
    health_checks: tuple[str, ...] = ()
