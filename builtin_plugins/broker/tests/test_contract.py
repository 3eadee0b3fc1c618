"""Both broker drivers pass the SDK's broker contract (NATS over the real server); the
plugin passes the plugin contract."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import ClassVar

import nats
import pytest
from noa.builtin_plugins.broker.drivers import InProcessDriver
from noa.builtin_plugins.broker.nats_driver import NatsBroker
from noa.plugin_sdk.ports.broker import BrokerPort
from noa.plugin_sdk.testing.contracts import BrokerContract, PluginContract


class TestInProcessDriver(BrokerContract):
    async def make_driver(self) -> BrokerPort:
        broker = InProcessDriver()
        await broker.start()
        return broker


@pytest.mark.nats
class TestNatsDriver(BrokerContract):
    streams: ClassVar[list[str]] = []

    @pytest.fixture(autouse=True)
    async def _delete_test_streams(self) -> AsyncIterator[None]:
        yield
        nc = await nats.connect("nats://127.0.0.1:4222")
        try:
            while self.streams:
                with contextlib.suppress(Exception):
                    await nc.jetstream().delete_stream(self.streams.pop())
        finally:
            await nc.close()

    async def make_driver(self) -> BrokerPort:
        # Its own stream and subject prefix: tests never see each other's messages.
        tag = uuid.uuid4().hex[:12]
        self.streams.append(f"NOATEST_{tag}")
        broker = NatsBroker(
            ["nats://127.0.0.1:4222"],
            stream=f"NOATEST_{tag}",
            prefix=f"noatest{tag}",
            max_age_s=600,
            max_bytes=16 << 20,
            publish_timeout_s=2.0,
        )
        await broker.start()
        return broker


class TestBrokerPluginContract(PluginContract):
    plugin = "broker"
