"""The ``memory`` driver of the cache slot: the SDK's bounded LRU, built from ``[cache]``.

Every driver of the cache slot that this plugin loads has a ``from_config(CacheConfig)``
class method; that is how the plugin builds whichever one ``[drivers] cache`` names.
"""

from __future__ import annotations

from noa.builtin_plugins.cache.config import CacheConfig
from noa.plugin_sdk.memory_cache import MemoryCache

__all__ = ["MemoryDriver"]


class MemoryDriver(MemoryCache):
    @classmethod
    def from_config(cls, config: CacheConfig) -> MemoryDriver:
        return cls(config.memory_max_entries)
