"""Keep every worker's models in step with the admin API.

Each worker holds its own models. An admin load or unload is done by the worker that
answers, which then announces it on the broker subject :data:`SUBJECT` (fan-out); every
other worker subscribed there does the same to its own models. With the ``nats``
broker this reaches every worker and every replica; with ``inprocess`` only the one
process. A worker that starts later takes its models from ``inference.load``.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Literal

import msgspec
from noa.builtin_plugins.inference.runtime import ModelRuntime, ModelStatus
from noa.plugin_sdk.errors import NoaError
from noa.plugin_sdk.ports.broker import BrokerPort, Message, Subscription

__all__ = ["SUBJECT", "AdminSync"]

SUBJECT = "inference.models.admin"

log = logging.getLogger("noa.inference")

Action = Literal["load", "unload"]


class _Announcement(msgspec.Struct, frozen=True):
    action: Action
    model: str
    origin: str


class AdminSync:
    """Admin actions on this worker's runtime, announced to the other workers."""

    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime = runtime
        self._broker: BrokerPort | None = None
        self._origin = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._subscription: Subscription | None = None
        self._decode = msgspec.json.Decoder(_Announcement).decode

    async def start(self, broker: BrokerPort | None) -> None:
        """Follow the other workers' announcements (no broker: this process only)."""
        self._broker = broker
        if broker is not None:
            self._subscription = await broker.subscribe(SUBJECT, self._follow)

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None

    async def load(self, model: str) -> ModelStatus:
        status = await self.runtime.load_or_explain(model)
        await self._announce("load", model)
        return status

    async def unload(self, model: str) -> ModelStatus:
        status = await self.runtime.unload(model)
        await self._announce("unload", model)
        return status

    async def _announce(self, action: Action, model: str) -> None:
        if self._broker is None:
            return
        payload = msgspec.json.encode(_Announcement(action, model, self._origin))
        try:
            await self._broker.publish(SUBJECT, payload)
        except NoaError as exc:  # this worker did it; the others keep their state
            log.warning("could not tell the other workers to %s %s: %s", action, model, exc)

    async def _follow(self, message: Message) -> None:
        announcement = self._decode(message.payload)
        if announcement.origin == self._origin:
            return
        action, model = announcement.action, announcement.model
        log.info("admin %s of %s, announced by another worker", action, model)
        try:
            if action == "load":
                await self.runtime.load(model)
            else:
                await self.runtime.unload(model)
        except NoaError as exc:  # reported in this worker's model states and log
            log.error("admin %s of %s failed here: %s", action, model, exc)
