"""Assembling the Litestar app from every plugin's routes and middleware."""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin, YamlRenderPlugin
from noa.builtin_plugins.http.access import (
    GROUP_OPT,
    PLUGIN_OPT,
    PUBLIC_OPT,
    access_hook,
    check_routes,
)
from noa.builtin_plugins.http.config import HttpConfig
from noa.builtin_plugins.http.core import Admission, RequestCore, security_headers
from noa.builtin_plugins.http.errors import exception_handlers
from noa.builtin_plugins.http.jsondepth import request_class
from noa.builtin_plugins.http.openapi import document_standard_errors
from noa.plugin_sdk import Host, Middleware, Registry, RouteGroup
from noa.plugin_sdk.auth import SCOPE_OPT, access_policy
from noa.plugin_sdk.transport import ASGIApp

__all__ = ["build_app"]

log = logging.getLogger("noa.http")


def _version() -> str:
    try:
        return version("noa-kernel")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"


def build_app(host: Host) -> ASGIApp:
    config = host.section("http", HttpConfig)
    groups = host.collect("noa_register_routes", Registry[RouteGroup]("route group"))
    middleware = host.collect("noa_register_middleware", Registry[Middleware]("middleware"))

    routers: list[Router] = []
    probe_paths: set[str] = set()
    error_shapes: list[tuple[str, Callable[[int, str], bytes]]] = []
    for contribution in groups.contributions():
        group = contribution.item
        public = group.public or (group.probe and group.scope is None)
        if group.scope is None and not public:
            log.warning(
                "route group %r of plugin %r declares no scope: only callers holding '*' "
                "may use it",
                contribution.name,
                contribution.plugin,
            )
        opt: dict[str, Any] = {
            GROUP_OPT: contribution.name,
            PLUGIN_OPT: contribution.plugin,
            PUBLIC_OPT: public,
        }
        if group.scope is not None:
            opt[SCOPE_OPT] = group.scope
        router = Router(
            path=group.path,
            route_handlers=list(group.handlers),
            tags=list(group.tags) or None,
            opt=opt,
        )
        routers.append(router)
        if group.probe:
            probe_paths.update(route.path for route in router.routes)
        if group.error_body is not None:
            # Each route's path up to its first parameter is a prefix the shape covers.
            error_shapes.extend(
                (route.path.split("{", 1)[0], group.error_body) for route in router.routes
            )

    openapi = None
    if config.openapi:
        openapi = OpenAPIConfig(
            title=config.title,
            version=_version(),
            path="/schema",
            render_plugins=[SwaggerRenderPlugin(path="/"), JsonRenderPlugin(), YamlRenderPlugin()],
            # The document's own routes: public, or behind "docs:read".
            openapi_router=Router(
                path="/schema",
                route_handlers=[],
                opt={
                    GROUP_OPT: "openapi",
                    PUBLIC_OPT: config.openapi_public,
                    SCOPE_OPT: "docs:read",
                },
            ),
        )
    hook = access_hook(access_policy(host))
    cors = None
    if config.cors_allow_origins:
        cors = CORSConfig(
            allow_origins=list(config.cors_allow_origins),
            allow_methods=list(config.cors_allow_methods),  # type: ignore[arg-type]
            allow_headers=list(config.cors_allow_headers),
            allow_credentials=config.cors_allow_credentials,
            expose_headers=["x-request-id", "retry-after"],
            max_age=config.cors_max_age_s,
        )
    app = Litestar(
        route_handlers=routers,
        cors_config=cors,
        openapi_config=openapi,
        exception_handlers=exception_handlers(),
        before_request=hook,
        request_class=request_class(config.max_json_depth),
        request_max_body_size=config.max_body_bytes,
        logging_config=None,
        debug=False,
    )
    check_routes(app, hook)
    if openapi is not None:
        document_standard_errors(app)
    wrapped: ASGIApp = Admission(
        app,
        max_in_flight=config.max_in_flight,
        max_event_streams=config.max_event_streams,
        timeout_s=config.request_timeout_s,
        retry_after_s=config.retry_after_s,
        probe_paths=probe_paths,
        # Longest prefix first, so a group's exact route wins over a shorter one.
        error_shapes=tuple(sorted(error_shapes, key=lambda s: len(s[0]), reverse=True)),
    )
    for contribution in reversed(middleware.contributions()):
        wrapped = contribution.item.factory(wrapped)
    headers = security_headers(config.hsts_max_age_s) if config.security_headers else None
    return RequestCore(wrapped, headers)
