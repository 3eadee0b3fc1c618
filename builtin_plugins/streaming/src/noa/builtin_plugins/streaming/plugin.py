"""Hook implementations of the streaming plugin; each delegates to its module.

It adds two WebSockets (a public route group: they check credentials themselves,
through the same access policy as every HTTP route) and one SSE route (checked by the
HTTP core like any other), shares one broker subscription per topic among a process's
clients, and closes every WebSocket with 1001 at shutdown.
"""

from __future__ import annotations

from noa.builtin_plugins.streaming.config import StreamingConfig
from noa.plugin_sdk import Host, PluginConfig, PluginInfo, Registry, RouteGroup, hookimpl
from noa.plugin_sdk.metrics import metrics_of
from noa.plugin_sdk.ports.broker import BROKER_STATE_KEY

PLUGIN_INFO = PluginInfo(
    description="Streaming: WebSocket /ws/events and /ws/stream, SSE /v1/events",
    after=("http", "auth", "broker", "observability"),
)

_STATE_KEY = "noa.streaming"


@hookimpl
def noa_register_config_sections(sections: Registry[type[PluginConfig]]) -> None:
    sections.add("streaming", StreamingConfig)


def _service(host: Host) -> object:
    from noa.builtin_plugins.streaming.service import Streaming
    from noa.plugin_sdk.auth import access_policy

    service = host.state.get(_STATE_KEY)
    if service is None:
        config = host.section("streaming", StreamingConfig)
        service = host.state[_STATE_KEY] = Streaming(config, access_policy(host))
    return service


@hookimpl
def noa_register_routes(routes: Registry[RouteGroup], host: Host) -> None:
    from noa.builtin_plugins.streaming.service import EVENTS_SCOPE
    from noa.builtin_plugins.streaming.sse import sse_handler
    from noa.builtin_plugins.streaming.ws_events import events_socket
    from noa.builtin_plugins.streaming.ws_stream import stream_socket

    service = _service(host)
    sockets = (events_socket(service), stream_socket(service))  # type: ignore[arg-type]
    # Public to the HTTP core, which cannot check a WebSocket: each checks at connect.
    routes.add("websockets", RouteGroup(handlers=sockets, public=True, tags=("streaming",)))
    routes.add(
        "events",
        RouteGroup(handlers=(sse_handler(service),), scope=EVENTS_SCOPE, tags=("streaming",)),  # type: ignore[arg-type]
    )


@hookimpl
async def noa_startup(host: Host) -> None:
    service = host.state.get(_STATE_KEY)
    if service is not None:  # None: the HTTP app (and so these routes) is not built
        service.start(host.state.get(BROKER_STATE_KEY), metrics_of(host.state))


@hookimpl
async def noa_shutdown(host: Host) -> None:
    service = host.state.get(_STATE_KEY)
    if service is not None:
        await service.close()
