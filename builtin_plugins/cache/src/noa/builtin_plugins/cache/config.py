"""The ``[cache]`` config section."""

from __future__ import annotations

from typing import Annotated

import msgspec
from noa.plugin_sdk import PluginConfig, Secret

__all__ = ["CacheConfig"]

Positive = Annotated[float, msgspec.Meta(gt=0)]


class CacheConfig(PluginConfig, frozen=True):
    # Entries the in-process tier holds (least recently used evicted first).
    memory_max_entries: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    # Time to live of an entry set without one, in seconds.
    default_ttl_s: Positive = 300.0
    # Longest a worker keeps its own copy of an entry of the shared tier, in seconds.
    local_ttl_s: Positive = 5.0
    # The Redis server when [drivers] cache = "redis". Write it as {env = "REDIS_URL"}
    # when it carries a password.
    redis_url: Secret = Secret("redis://127.0.0.1:6379/0")
    # Prefix of every key this server writes, so several deployments can share a Redis.
    redis_prefix: str = "noa:cache:"
    redis_pool_size: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 32
    # Longest one Redis command may take before the cache falls back to memory.
    redis_timeout_s: Positive = 0.5
    # After a Redis failure, how long to use memory only before trying Redis again.
    redis_retry_s: Positive = 1.0
    # true: /ready is not ready while Redis is unreachable; false: only degraded.
    redis_required: bool = False
