"""Hook implementations of the HTTP core plugin; each delegates to its module."""

from __future__ import annotations

from noa.builtin_plugins.http.app import build_app
from noa.builtin_plugins.http.config import HttpConfig
from noa.builtin_plugins.http.routes import api_handlers, probe_handlers
from noa.plugin_sdk import Host, PluginConfig, PluginInfo, Registry, RouteGroup, hookimpl
from noa.plugin_sdk.transport import ASGIApp

PLUGIN_INFO = PluginInfo(description="HTTP core: Litestar app, probes, errors, limits, OpenAPI")


@hookimpl
def noa_register_config_sections(sections: Registry[type[PluginConfig]]) -> None:
    sections.add("http", HttpConfig)


@hookimpl
def noa_register_routes(routes: Registry[RouteGroup], host: Host) -> None:
    routes.add("probes", RouteGroup(handlers=tuple(probe_handlers(host)), probe=True))
    routes.add("plugins", RouteGroup(handlers=tuple(api_handlers(host)), scope="plugins:read"))


@hookimpl
def noa_asgi_app(host: Host) -> ASGIApp:
    return build_app(host)
