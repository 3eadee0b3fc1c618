"""The ``inprocess`` driver of the broker slot: the SDK's in-process broker.

Every driver this plugin loads has ``from_config(BrokerConfig)`` and ``async start()``.
"""

from __future__ import annotations

from noa.builtin_plugins.broker.config import BrokerConfig
from noa.plugin_sdk.inprocess_broker import InProcessBroker

__all__ = ["InProcessDriver"]


class InProcessDriver(InProcessBroker):
    @classmethod
    def from_config(cls, config: BrokerConfig) -> InProcessDriver:
        return cls()

    async def start(self) -> None:
        return None
