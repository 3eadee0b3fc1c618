"""``grpc.health.v1`` answered from the readiness checks behind ``/ready``.

The server as a whole (service ``""``) is SERVING when ``host.readiness()`` is ready.
A service is SERVING when none of the checks it names (``GrpcService.health_checks``)
fails, or, naming none, when the server is. A ``Check`` call runs the checks at once, as
``GET /ready`` does; ``Watch`` streams are fed by a loop every ``health_interval_s``. On
shutdown every status turns NOT_SERVING for good, before the server stops taking calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio
from noa.plugin_sdk import Host, ReadinessReport

__all__ = ["ReadinessHealth"]

log = logging.getLogger("noa.grpc")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ReadinessHealth(health_aio.HealthServicer):  # type: ignore[misc]
    def __init__(self, host: Host, services: Mapping[str, tuple[str, ...]]) -> None:
        super().__init__()
        self._host = host
        self._services = dict(services)
        self._loop_task: asyncio.Task[None] | None = None

    def statuses(self, report: ReadinessReport) -> dict[str, int]:
        failing = {c.name for c in report.components if c.status == "failing"}
        overall = SERVING if report.ready else NOT_SERVING
        out = {"": overall}
        for service, checks in self._services.items():
            if checks:
                out[service] = NOT_SERVING if failing.intersection(checks) else SERVING
            else:
                out[service] = overall
        return out

    async def refresh(self) -> None:
        report = await self._host.readiness()
        for service, status in self.statuses(report).items():
            await self.set(service, status)

    async def Check(self, request: Any, context: Any) -> Any:
        await self.refresh()
        return await super().Check(request, context)

    def start(self, interval_s: float) -> None:
        async def loop() -> None:
            while True:
                try:
                    await self.refresh()
                except Exception:
                    log.exception("the gRPC health service could not read readiness")
                await asyncio.sleep(interval_s)

        self._loop_task = asyncio.get_running_loop().create_task(loop(), name="noa-grpc-health")

    async def shut_down(self) -> None:
        """Every service NOT_SERVING, for good; the refresh loop stopped."""
        await self.enter_graceful_shutdown()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
