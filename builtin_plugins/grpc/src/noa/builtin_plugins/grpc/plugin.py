"""Hook implementations of the gRPC plugin; each delegates to its module.

With ``[grpc] enabled = true`` every worker starts a grpc.aio server in ``noa_startup``
serving what plugins contribute through ``noa_register_grpc_services``, and stops it in
``noa_shutdown`` (health NOT_SERVING first). Disabled, it does nothing at all.
"""

from __future__ import annotations

import errno
import socket

from noa.builtin_plugins.grpc.config import GrpcConfig
from noa.plugin_sdk import (
    GrpcService,
    Host,
    PluginConfig,
    PluginInfo,
    PluginStartError,
    Registry,
    hookimpl,
)

PLUGIN_INFO = PluginInfo(
    description="gRPC transport: the contributed services, health and reflection on [grpc] port",
    # Last: the services it serves come from plugins that must have started.
    after=("http", "observability", "auth", "inference", "retrieval", "orchestration"),
)

SERVER_STATE_KEY = "noa.grpc.server"


def _config(host: Host) -> GrpcConfig:
    return host.section("grpc", GrpcConfig)


@hookimpl
def noa_register_config_sections(sections: Registry[type[PluginConfig]]) -> None:
    sections.add("grpc", GrpcConfig)


@hookimpl
def noa_before_serve(host: Host) -> None:
    """Refuse a port another server holds: with SO_REUSEPORT the workers would share it
    with that server silently."""
    config = _config(host)
    if not config.enabled or config.port == 0:
        return
    address = config.host or host.server.host
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, config.port))
        except OSError as exc:
            why = (
                "the port is already in use (is another server running?)"
                if exc.errno == errno.EADDRINUSE
                else exc.strerror or str(exc)
            )
            raise PluginStartError(
                "grpc", f"cannot listen on {address}:{config.port} (grpc.port): {why}"
            ) from None


@hookimpl
async def noa_startup(host: Host) -> None:
    config = _config(host)
    if not config.enabled:
        return
    from noa.builtin_plugins.grpc.server import GrpcServer

    services = host.collect("noa_register_grpc_services", Registry[GrpcService]("gRPC service"))
    server = GrpcServer(host, config)
    await server.start(services.contributions())
    host.state[SERVER_STATE_KEY] = server


@hookimpl
async def noa_shutdown(host: Host) -> None:
    server = host.state.pop(SERVER_STATE_KEY, None)
    if server is not None:
        await server.stop()
