"""NATS going away and coming back, against a private nats-server with its own store."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from noa.builtin_plugins.broker.nats_driver import NatsBroker
from noa.plugin_sdk import ServiceUnavailable
from noa.plugin_sdk.testing.contracts import Inbox


def broker_for(url: str, publish_timeout_s: float = 1.0) -> NatsBroker:
    return NatsBroker([url], stream="FAULTS", prefix="faults", publish_timeout_s=publish_timeout_s)


async def test_outage_fails_publishes_clearly_and_loses_nothing_acknowledged(
    private_nats: Any,
) -> None:
    broker = broker_for(private_nats.url)
    await broker.start()
    try:
        for n in range(5):  # acknowledged by JetStream before the outage
            await broker.publish("jobs.resize", f"job-{n}".encode())
        assert await broker.ping()

        private_nats.stop()
        with pytest.raises(ServiceUnavailable, match="did not acknowledge the message within 1 s"):
            await asyncio.wait_for(broker.publish("jobs.resize", b"lost?"), 10)
        assert not await broker.ping()

        private_nats.start()
        for _ in range(100):  # the client reconnects by itself
            if await broker.ping():
                break
            await asyncio.sleep(0.1)
        assert await broker.ping()
        await broker.publish("jobs.resize", b"job-5")

        inbox = Inbox(timeout_s=10)
        await broker.consume("jobs.resize", inbox, max_deliveries=3, ack_timeout_s=5)
        messages = await inbox.wait_for_count(6)
        assert [m.payload for m in messages] == [f"job-{n}".encode() for n in range(6)]
    finally:
        await broker.close()


async def test_a_publish_waits_out_a_short_outage(private_nats: Any) -> None:
    broker = broker_for(private_nats.url, publish_timeout_s=15.0)
    await broker.start()
    try:
        private_nats.stop()
        publishing = asyncio.create_task(broker.publish("jobs.resize", b"patient"))
        await asyncio.sleep(1.0)
        assert not publishing.done()
        private_nats.start()
        await asyncio.wait_for(publishing, 15)  # acknowledged once NATS is back
        inbox = Inbox(timeout_s=10)
        await broker.consume("jobs.resize", inbox)
        assert (await inbox.wait_for_count(1))[0].payload == b"patient"
    finally:
        await broker.close()


async def test_ready_follows_nats_and_start_does_not_need_it(
    noa_boot: Any, private_nats: Any
) -> None:
    private_nats.stop()
    config = {"drivers": {"broker": "nats"}, "broker": {"nats_url": private_nats.url}}
    async with noa_boot(["http", "broker"], config=config) as noa:
        down = await noa.client.get("/ready")
        assert down.status_code == 503
        (component,) = down.json()["components"]
        assert (component["name"], component["status"]) == ("broker", "failing")
        private_nats.start()
        for _ in range(100):
            if (await noa.client.get("/ready")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert (await noa.client.get("/ready")).status_code == 200


async def test_malformed_nats_url_names_the_key(noa_boot: Any) -> None:
    from noa.plugin_sdk import PluginStartError

    config = {"drivers": {"broker": "nats"}, "broker": {"nats_url": "http://nats:4222"}}
    with pytest.raises(PluginStartError, match=r"broker\.nats_url"):
        async with noa_boot(["http", "broker"], config=config):
            pass


@pytest.mark.slow
async def test_reconnects_after_an_outage_longer_than_the_clients_default_give_up(
    private_nats: Any,
) -> None:
    """nats-py gives up after 60 reconnect attempts 2 s apart (about two minutes) by
    default; the driver's client must still be trying after 130 s."""
    broker = broker_for(private_nats.url)
    await broker.start()
    try:
        await broker.publish("jobs.resize", b"before")
        private_nats.stop()
        await asyncio.sleep(130)
        assert not await broker.ping()
        private_nats.start()
        for _ in range(100):
            if await broker.ping():
                break
            await asyncio.sleep(0.1)
        assert await broker.ping()
        await broker.publish("jobs.resize", b"after")
        inbox = Inbox(timeout_s=10)
        await broker.consume("jobs.resize", inbox)
        assert [m.payload for m in await inbox.wait_for_count(2)] == [b"before", b"after"]
    finally:
        await broker.close()
