"""The ``[grpc]`` config section."""

from __future__ import annotations

from typing import Annotated

import msgspec
from noa.plugin_sdk import PluginConfig

__all__ = ["MIB", "GrpcConfig"]

MIB = 1024 * 1024


class GrpcConfig(PluginConfig, frozen=True):
    """Where and how the gRPC server listens.

    Off by default: the server binds its own port (gRPC can't share granian's), and two
    servers on one machine must not share it by accident. Each granian worker runs one
    server on the same port (``SO_REUSEPORT``), as each runs the HTTP app.
    """

    enabled: bool = False
    # Empty: the HTTP server's address (server.host).
    host: str = ""
    # 0: any free port (tests); with several workers each would get its own.
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 50051
    # Largest message in and out. tritonclient sends whole tensors in one message.
    max_receive_message_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 64 * MIB
    max_send_message_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 64 * MIB
    # HTTP/2 streams one connection may have open at once.
    max_concurrent_streams: Annotated[int, msgspec.Meta(ge=1)] = 100
    # Calls being handled at once in one worker; past it RESOURCE_EXHAUSTED. 0: no bound.
    max_concurrent_rpcs: Annotated[int, msgspec.Meta(ge=0)] = 0
    # Serve TLS with server.ssl_certificate and server.ssl_keyfile when they are set.
    tls: bool = True
    # On shutdown: health turns NOT_SERVING, then calls in flight get this long to end.
    shutdown_grace_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 5.0
    # How often the health service re-runs the readiness checks for Watch streams
    # (a Check call runs them at once).
    health_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    # Server reflection (grpcurl list / describe), without credentials.
    reflection: bool = True
