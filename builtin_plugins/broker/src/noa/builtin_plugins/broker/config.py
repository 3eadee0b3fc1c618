"""The ``[broker]`` config section."""

from __future__ import annotations

from typing import Annotated

import msgspec
from noa.plugin_sdk import PluginConfig, Secret

__all__ = ["BrokerConfig"]

Positive = Annotated[float, msgspec.Meta(gt=0)]


class BrokerConfig(PluginConfig, frozen=True):
    # The NATS server(s) when [drivers] broker = "nats"; comma-separated for a cluster.
    # Write {env = "NATS_URL"} when the URL carries credentials.
    nats_url: Secret = Secret("nats://127.0.0.1:4222")
    # JetStream stream holding every message this server publishes.
    nats_stream: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]+$")] = "NOA"
    # Every subject is published as "<subject_prefix>.<subject>", so several
    # deployments can share one NATS.
    subject_prefix: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]+$")] = "noa"
    # How long the stream keeps a message (seconds) and how large it may grow (bytes).
    stream_max_age_s: Positive = 7 * 24 * 3600.0
    stream_max_bytes: Annotated[int, msgspec.Meta(ge=1_048_576)] = 1 << 30
    # A publish that NATS does not acknowledge is retried for this long, then fails
    # with 503 "broker unavailable". 0 fails at once.
    publish_timeout_s: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    connect_timeout_s: Positive = 2.0
