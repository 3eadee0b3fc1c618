"""Transport hooks: who builds the ASGI app, what routes and middleware go in it, and
what gRPC services the gRPC server serves.

The HTTP core plugin answers ``noa_asgi_app`` and, while building the app, collects
``noa_register_routes`` and ``noa_register_middleware`` from every plugin; the gRPC plugin
collects ``noa_register_grpc_services`` when it starts its server. Per-request behaviour
is installed here, at assembly; no hook runs per request.
"""

from __future__ import annotations

from typing import Any

from noa.plugin_sdk import Host, Registry, hookspec
from noa.plugin_sdk.transport import GrpcService, Middleware, RouteGroup


@hookspec(firstresult=True)
def noa_asgi_app(host: Host) -> Any:
    """Build and return the process's ASGI application, or ``None`` to pass.

    ``firstresult``: the first plugin in plugin order that returns an app wins. The
    kernel wraps the app to run the lifecycle on ASGI lifespan events, so the returned
    app need not handle lifespan itself. Called once per worker process.
    """


@hookspec
def noa_register_routes(routes: Registry[RouteGroup], host: Host) -> None:
    """Contribute HTTP routes: ``routes.add("hello", RouteGroup(handlers=[...]))``.

    Handlers are Litestar route handlers (functions decorated with ``@get``/``@post``,
    controllers or routers). Every route goes through the server's middleware: request
    ids, the standard error shape, limits, metrics. Called once per worker while the app
    is assembled. Returns nothing.
    """


@hookspec
def noa_register_middleware(middleware: Registry[Middleware], host: Host) -> None:
    """Contribute ASGI middleware: ``middleware.add("metrics", Middleware(factory=f))``.

    ``factory(app) -> app`` wraps the application. Middleware is applied in plugin
    order, the first registered being the outermost. It runs inside the HTTP core's
    request-id layer and outside its admission control and request timeout, so it sees
    every response, the core's own 503 and 504 included. Called once per worker.
    Returns nothing.
    """


@hookspec
def noa_register_grpc_services(services: Registry[GrpcService], host: Host) -> None:
    """Contribute gRPC services: ``services.add("inference", GrpcService(name=
    "noa.v1.InferenceService", servicer=..., add_to_server=..., scopes={...}))``.

    The gRPC plugin calls it once per worker, in its ``noa_startup``, after the plugins
    ordered before it have started, when the ``[grpc]`` server is enabled. Every method
    goes through the same access policy (each method's declared scope), rate limits,
    request ids, metrics and error mapping as REST; ``grpc.health.v1`` reports each
    service. Servicers use grpc.aio (``async def``). Returns nothing.
    """
