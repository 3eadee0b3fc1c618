"""The per-process state of the streaming plugin, built at assembly, started with the
server: the config, the access policy, the hub on the broker and the live sessions."""

from __future__ import annotations

import logging

from noa.builtin_plugins.streaming.config import StreamingConfig
from noa.builtin_plugins.streaming.frames import Close, FrameError
from noa.builtin_plugins.streaming.hub import Hub
from noa.builtin_plugins.streaming.session import Sessions
from noa.builtin_plugins.streaming.telemetry import Telemetry
from noa.builtin_plugins.streaming.topics import Topic, resolve
from noa.plugin_sdk.auth import AccessPolicy, Principal
from noa.plugin_sdk.errors import ApiError, Forbidden, ServiceUnavailable
from noa.plugin_sdk.metrics import MetricsRegistry
from noa.plugin_sdk.ports.broker import BrokerPort

__all__ = ["EVENTS_SCOPE", "STREAM_SCOPE", "Streaming"]

log = logging.getLogger("noa.streaming")

#: What connecting to /ws/events and calling GET /v1/events need; each topic needs its
#: own scope besides (see topics.py).
EVENTS_SCOPE = "events:subscribe"
#: What connecting to /ws/stream needs; each request needs its REST route's scope too.
STREAM_SCOPE = "inference:invoke"


class Streaming:
    __slots__ = ("config", "hub", "policy", "sessions")

    def __init__(self, config: StreamingConfig, policy: AccessPolicy) -> None:
        self.config = config
        self.policy = policy
        self.sessions = Sessions(config, Telemetry())
        self.hub: Hub | None = None

    @property
    def telemetry(self) -> Telemetry:
        return self.sessions.telemetry

    def start(self, broker: BrokerPort | None, metrics: MetricsRegistry) -> None:
        self.sessions.telemetry = Telemetry(metrics)
        if broker is None:
            log.warning("streaming: no broker plugin, so no event topics (subscribing fails)")
        else:
            self.hub = Hub(broker)

    async def close(self) -> None:
        await self.sessions.close_all(Close.GOING_AWAY, "the server is shutting down")
        if self.hub is not None:
            await self.hub.close()

    def topic(self, name: object, principal: Principal | None) -> Topic:
        """The topic ``name`` if ``principal`` may follow it; ``ApiError`` otherwise
        (``unknown_topic`` 400, ``insufficient_scope`` 403, ``unavailable`` 503)."""
        if not isinstance(name, str) or not name:
            raise FrameError("bad_frame", "'topic' must be a topic name (a string)")
        topic = resolve(name)
        if principal is None or not principal.allows(topic.scope, None):
            raise Forbidden(
                f"the topic {name!r} needs the scope {topic.scope!r}, which the credential lacks",
                code="insufficient_scope",
            )
        if self.hub is None:
            raise ServiceUnavailable(
                "event topics need the broker plugin, which is not enabled", code="unavailable"
            )
        return topic


def frame_error(exc: ApiError, frame_id: object = None, **extra: object) -> FrameError:
    """The error frame answering a frame that met ``exc``."""
    return FrameError(exc.code or "error", exc.message, frame_id, status=exc.status_code, **extra)
