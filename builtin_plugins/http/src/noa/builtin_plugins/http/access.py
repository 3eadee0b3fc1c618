"""Access control on every route: the declared scope is checked before the handler runs.

Litestar calls the app's ``before_request`` hook after routing and before it reads the
body, with the matched handler's resolved ``opt`` at hand (its route group's scope,
public flag and name, or the handler's own overrides). Public routes pass; every other
request goes to the access policy the auth plugin built (``noa_access_policy``), which
authenticates, checks the scope and the resource, and applies rate limits. A refusal is
raised as an ``ApiError`` and answered in the route's error shape; a grant's headers
(``RateLimit-*``) are left in the scope state for the request-id layer to send.

A hook is cheaper than middleware (about 10 µs a request less), but a handler could
override it or answer from Litestar's response cache before it runs; :func:`check_routes`
refuses both at assembly, so no route can skip the check by accident.

With no auth plugin enabled, :class:`~noa.plugin_sdk.auth.LoopbackOnly` stands in
(:func:`~noa.plugin_sdk.auth.access_policy` picks it): callers on this machine are
served, everyone else gets 401. The server is never open by omission. Transports that
are not HTTP routes (WebSockets) ask the same policy through the same SDK helpers.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request
from litestar.handlers import HTTPRouteHandler
from noa.plugin_sdk.auth import (
    ANY_SCOPE,
    PRINCIPAL_STATE_KEY,
    RESOURCE_OPT,
    SCOPE_OPT,
    AccessPolicy,
    LoopbackOnly,
    access_request,
)
from noa.plugin_sdk.errors import PluginError

__all__ = [
    "GROUP_OPT",
    "PLUGIN_OPT",
    "PUBLIC_OPT",
    "RESPONSE_HEADERS_STATE_KEY",
    "LoopbackOnly",
    "access_hook",
    "check_routes",
]

#: Handler ``opt`` keys the HTTP core sets from the route group.
GROUP_OPT = "noa_group"
PLUGIN_OPT = "noa_plugin"
PUBLIC_OPT = "noa_public"
#: ``scope["state"]`` key of extra response headers, sent by the request-id layer.
RESPONSE_HEADERS_STATE_KEY = "response_headers"


def access_hook(policy: AccessPolicy) -> Any:
    """The app's ``before_request`` hook asking ``policy`` about each request."""

    async def check_access(request: Request[Any, Any, Any]) -> None:
        scope = request.scope
        opt = scope["route_handler"].opt
        if opt.get(PUBLIC_OPT):
            return
        resource = opt.get(RESOURCE_OPT)
        if resource is not None:
            params = scope["path_params"]
            resource = resource(params) if callable(resource) else resource.format_map(params)
        grant = await policy.authorize(
            access_request(
                scope,
                group=opt.get(GROUP_OPT, ""),
                scope=opt.get(SCOPE_OPT, ANY_SCOPE),
                resource=resource,
            )
        )
        state = scope["state"]
        state[PRINCIPAL_STATE_KEY] = grant.principal
        if grant.headers:
            state[RESPONSE_HEADERS_STATE_KEY] = grant.headers

    return check_access


def check_routes(app: Litestar, hook: Any) -> None:
    """Refuse, at assembly, any route that would answer without asking the hook."""
    for route in app.routes:
        handlers = getattr(route, "route_handlers", None) or [route.route_handler]  # type: ignore[union-attr]
        for handler in handlers:
            where = f"route {sorted(route.methods)} {route.path} ({handler.handler_name})"
            public = bool(handler.opt.get(PUBLIC_OPT))
            plugin = str(handler.opt.get(PLUGIN_OPT, "http"))
            if not isinstance(handler, HTTPRouteHandler):
                if not public:
                    raise PluginError(
                        plugin,
                        f"{where} is not an HTTP route and gets no access check: declare "
                        "its route group public and check credentials in the handler",
                    )
                continue
            if handler.resolve_before_request() is not hook:
                raise PluginError(
                    plugin,
                    f"{where} sets its own before_request, which would skip access control",
                )
            if handler.cache and not public:
                raise PluginError(
                    plugin,
                    f"{where} uses the response cache, which answers before access control",
                )
