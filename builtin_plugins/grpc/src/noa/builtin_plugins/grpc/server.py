"""The grpc.aio server of one worker: the contributed services behind their guards,
health and reflection, on the ``[grpc]`` port.

Every granian worker runs one, bound with ``SO_REUSEPORT`` so all share the port and the
kernel spreads connections among them. It runs on the worker's event loop; granian owns
the signals, and the lifecycle's shutdown stops it: health NOT_SERVING first, then
``stop(grace)`` lets calls in flight end.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from noa.builtin_plugins.grpc.calls import CallMetrics, Guard, GuardedServer, Spans
from noa.builtin_plugins.grpc.config import GrpcConfig
from noa.builtin_plugins.grpc.health import ReadinessHealth
from noa.plugin_sdk import GrpcService, Host, PluginStartError
from noa.plugin_sdk.auth import ANY_SCOPE, access_policy
from noa.plugin_sdk.metrics import metrics_of
from noa.plugin_sdk.registry import Contribution
from noa.plugin_sdk.tracing import TRACER_STATE_KEY

__all__ = ["GrpcServer", "listen_address"]

log = logging.getLogger("noa.grpc")


def listen_address(config: GrpcConfig, host: Host) -> str:
    address = config.host or host.server.host
    return f"[{address}]:{config.port}" if ":" in address else f"{address}:{config.port}"


def _tls(config: GrpcConfig, host: Host) -> grpc.ServerCredentials | None:
    server = host.server
    if not (config.tls and server.ssl_certificate and server.ssl_keyfile):
        return None
    key = Path(server.ssl_keyfile).read_bytes()
    chain = Path(server.ssl_certificate).read_bytes()
    return grpc.ssl_server_credentials(((key, chain),))


class GrpcServer:
    """Built and started by :meth:`start`; :meth:`stop` drains it."""

    def __init__(self, host: Host, config: GrpcConfig) -> None:
        self.host = host
        self.config = config
        self.port: int | None = None
        self.services: list[str] = []
        self.health: ReadinessHealth | None = None
        self._server: grpc.aio.Server | None = None

    async def start(self, contributions: list[Contribution[GrpcService]]) -> None:
        config = self.config
        options: list[tuple[str, Any]] = [
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", config.max_receive_message_bytes),
            ("grpc.max_send_message_length", config.max_send_message_bytes),
            ("grpc.max_concurrent_streams", config.max_concurrent_streams),
        ]
        server = grpc.aio.server(
            options=options, maximum_concurrent_rpcs=config.max_concurrent_rpcs or None
        )
        credentials = _tls(config, self.host)
        policy = access_policy(self.host)
        metrics = CallMetrics(metrics_of(self.host.state))
        tracer = self.host.state.get(TRACER_STATE_KEY)
        spans = None if tracer is None else Spans(tracer)
        checks: dict[str, tuple[str, ...]] = {}
        for contribution in contributions:
            service = contribution.item
            if not isinstance(service, GrpcService):
                raise PluginStartError(
                    contribution.plugin,
                    f"gRPC service {contribution.name!r} is a {type(service).__name__}, "
                    "not a noa.plugin_sdk.GrpcService",
                )
            group = service.group or contribution.name

            def guard_for(
                name: str, method: str, service: GrpcService = service, group: str = group
            ) -> Guard:
                scope = service.scopes.get(method) or service.scope or ANY_SCOPE
                return Guard(
                    service=name,
                    method=method,
                    scope=scope,
                    group=group,
                    policy=policy,
                    metrics=metrics,
                    secure=credentials is not None,
                    resource_of=service.resources.get(method),
                    spans=spans,
                )

            proxy = GuardedServer(server, guard_for)
            service.add_to_server(service.servicer, proxy)
            if service.name not in proxy.services:
                raise PluginStartError(
                    contribution.plugin,
                    f"gRPC service {contribution.name!r}: add_to_server registered "
                    f"{', '.join(proxy.services) or 'nothing'}, not {service.name!r} (stubs "
                    "made by grpcio-tools older than 1.63 can't be served: regenerate them)",
                )
            checks[service.name] = service.health_checks
            self.services.append(service.name)
        self.health = ReadinessHealth(self.host, checks)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        public = [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
        if config.reflection:
            public.append(reflection.SERVICE_NAME)
            reflection.enable_server_reflection([*self.services, *public], server)
        address = listen_address(config, self.host)
        try:
            if credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise PluginStartError("grpc", f"cannot listen on {address}: {exc}") from exc
        await server.start()
        self._server = server
        self.port = port
        self.health.start(config.health_interval_s)
        scheme = "TLS" if credentials is not None else "plaintext"
        names = ", ".join(self.services) or "no service"
        log.info("gRPC serving %s on port %d (%s)", names, port, scheme)

    async def stop(self) -> None:
        if self.health is not None:
            await self.health.shut_down()
        if self._server is not None:
            await self._server.stop(self.config.shutdown_grace_s)
            self._server = None
