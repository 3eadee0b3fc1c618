"""The contract every ``noa.drivers.broker`` driver passes.

Subclass :class:`BrokerContract` and implement :meth:`~BrokerContract.make_driver`.
Every test uses subjects under its own random prefix, so a shared server is safe.
A test never sleeps to prove a message did *not* arrive: it publishes a matching
message last and checks what came before it, relying on per-subscription order.
"""

from __future__ import annotations

import abc
import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from noa.plugin_sdk.errors import BadRequest
from noa.plugin_sdk.ports.broker import (
    DELIVERIES_HEADER,
    BrokerPort,
    Message,
    dead_letter_subject,
)

__all__ = ["BrokerContract", "Inbox"]


class Inbox:
    """A handler that keeps what it receives, and lets a test wait for it."""

    def __init__(self, timeout_s: float) -> None:
        self.messages: list[Message] = []
        self._timeout_s = timeout_s
        self._changed = asyncio.Event()

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)
        self._changed.set()

    @property
    def payloads(self) -> list[bytes]:
        return [m.payload for m in self.messages]

    async def wait_until(self, done: Callable[[list[Message]], bool]) -> list[Message]:
        """Wait until ``done(messages)`` holds; fail after the contract's timeout."""
        try:
            async with asyncio.timeout(self._timeout_s):
                while not done(self.messages):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pytest.fail(f"gave up waiting after {self._timeout_s}s; got {self.messages!r}")
        return self.messages

    async def wait_for_payload(self, payload: bytes) -> list[Message]:
        return await self.wait_until(lambda messages: payload in [m.payload for m in messages])

    async def wait_for_count(self, count: int) -> list[Message]:
        return await self.wait_until(lambda messages: len(messages) >= count)


class BrokerContract(abc.ABC):
    """Behaviour shared by every broker driver."""

    # The most a test waits for a delivery; generous so a loaded CI machine passes.
    delivery_timeout_s = 5.0
    # The ack timeout the redelivery test uses; a driver with a coarser clock raises it.
    ack_timeout_s = 0.2

    @abc.abstractmethod
    async def make_driver(self) -> BrokerPort:
        """A new broker of the driver under test, connected and ready."""

    @pytest.fixture
    async def driver(self) -> AsyncIterator[BrokerPort]:
        broker = await self.make_driver()
        try:
            yield broker
        finally:
            await broker.close()

    @pytest.fixture
    def prefix(self) -> str:
        return f"t{uuid.uuid4().hex[:12]}"

    def inbox(self) -> Inbox:
        return Inbox(self.delivery_timeout_s)

    async def test_satisfies_the_port(self, driver: BrokerPort) -> None:
        assert isinstance(driver, BrokerPort)

    async def test_subscriber_gets_subject_payload_and_headers(
        self, driver: BrokerPort, prefix: str
    ) -> None:
        inbox = self.inbox()
        await driver.subscribe(f"{prefix}.events", inbox)
        await driver.publish(f"{prefix}.events", b"with", {"trace-id": "abc", "x-n": "1"})
        await driver.publish(f"{prefix}.events", b"without")
        first, second = await inbox.wait_for_count(2)
        assert first.subject == f"{prefix}.events"
        assert first.payload == b"with"
        assert dict(first.headers) == {"trace-id": "abc", "x-n": "1"}
        assert first.delivery == 1
        assert second.payload == b"without"
        assert dict(second.headers) == {}

    async def test_every_subscriber_gets_a_copy(self, driver: BrokerPort, prefix: str) -> None:
        inboxes = [self.inbox() for _ in range(3)]
        for inbox in inboxes:
            await driver.subscribe(f"{prefix}.fan", inbox)
        await driver.publish(f"{prefix}.fan", b"x")
        for inbox in inboxes:
            assert (await inbox.wait_for_count(1))[0].payload == b"x"

    async def test_messages_arrive_in_publish_order(self, driver: BrokerPort, prefix: str) -> None:
        inbox = self.inbox()
        await driver.subscribe(f"{prefix}.seq", inbox)
        sent = [str(n).encode() for n in range(50)]
        for payload in sent:
            await driver.publish(f"{prefix}.seq", payload)
        await inbox.wait_for_count(len(sent))
        assert inbox.payloads == sent

    async def test_star_matches_exactly_one_token(self, driver: BrokerPort, prefix: str) -> None:
        inbox = self.inbox()
        await driver.subscribe(f"{prefix}.a.*", inbox)
        for subject in ("a", "a.b.c", "x.b", "b.a"):
            await driver.publish(f"{prefix}.{subject}", b"miss")
        await driver.publish(f"{prefix}.a.b", b"hit")
        await driver.publish(f"{prefix}.a.end", b"last")
        await inbox.wait_for_payload(b"last")
        assert [m.subject for m in inbox.messages] == [f"{prefix}.a.b", f"{prefix}.a.end"]

    async def test_star_may_stand_in_the_middle(self, driver: BrokerPort, prefix: str) -> None:
        inbox = self.inbox()
        await driver.subscribe(f"{prefix}.*.created", inbox)
        await driver.publish(f"{prefix}.order.updated", b"miss")
        await driver.publish(f"{prefix}.order.item.created", b"miss")
        await driver.publish(f"{prefix}.order.created", b"last")
        await inbox.wait_for_payload(b"last")
        assert inbox.payloads == [b"last"]

    async def test_greater_than_matches_one_or_more_tokens(
        self, driver: BrokerPort, prefix: str
    ) -> None:
        inbox = self.inbox()
        await driver.subscribe(f"{prefix}.a.>", inbox)
        await driver.publish(f"{prefix}.a", b"miss")
        await driver.publish(f"{prefix}.b.c", b"miss")
        await driver.publish(f"{prefix}.a.b", b"one")
        await driver.publish(f"{prefix}.a.b.c.d", b"three")
        await driver.publish(f"{prefix}.a.end", b"last")
        await inbox.wait_for_payload(b"last")
        assert inbox.payloads == [b"one", b"three", b"last"]

    async def test_unsubscribe_stops_delivery(self, driver: BrokerPort, prefix: str) -> None:
        leaving, staying = self.inbox(), self.inbox()
        subscription = await driver.subscribe(f"{prefix}.s", leaving)
        await driver.subscribe(f"{prefix}.s", staying)
        await driver.publish(f"{prefix}.s", b"before")
        await leaving.wait_for_payload(b"before")
        await subscription.unsubscribe()
        await subscription.unsubscribe()
        await driver.publish(f"{prefix}.s", b"after")
        await staying.wait_for_payload(b"after")
        assert leaving.payloads == [b"before"]

    async def test_a_failing_subscriber_keeps_its_subscription(
        self, driver: BrokerPort, prefix: str
    ) -> None:
        inbox = self.inbox()

        async def fragile(message: Message) -> None:
            await inbox(message)
            if message.payload == b"boom":
                raise RuntimeError("handler failure the broker must survive")

        await driver.subscribe(f"{prefix}.f", fragile)
        await driver.publish(f"{prefix}.f", b"boom")
        await driver.publish(f"{prefix}.f", b"fine")
        await inbox.wait_for_payload(b"fine")
        assert inbox.payloads == [b"boom", b"fine"]

    @pytest.mark.parametrize("subject", ["", "a..b", ".a", "a.", "a b", "a.*", "a.>", "a.b*"])
    async def test_publish_refuses_invalid_subjects(self, driver: BrokerPort, subject: str) -> None:
        with pytest.raises(BadRequest):
            await driver.publish(subject, b"x")

    @pytest.mark.parametrize("subject", ["", "a..b", "a.>.b", ">.a", "a.b*", "a.>x"])
    async def test_subscribe_refuses_invalid_patterns(
        self, driver: BrokerPort, subject: str
    ) -> None:
        async def ignore(message: Message) -> None:
            del message

        with pytest.raises(BadRequest):
            await driver.subscribe(subject, ignore)

    async def test_consume_acknowledges_a_returning_handler(
        self, driver: BrokerPort, prefix: str
    ) -> None:
        inbox = self.inbox()
        queue = f"{prefix}.jobs"
        await driver.consume(queue, inbox, max_deliveries=3, ack_timeout_s=30.0)
        await driver.publish(queue, b"one", {"job": "1"})
        await driver.publish(queue, b"two")
        await inbox.wait_for_payload(b"two")
        assert [(m.payload, m.delivery) for m in inbox.messages] == [(b"one", 1), (b"two", 1)]
        assert dict(inbox.messages[0].headers) == {"job": "1"}
        assert inbox.messages[0].subject == queue

    async def test_consumers_of_a_queue_share_its_messages(
        self, driver: BrokerPort, prefix: str
    ) -> None:
        seen = self.inbox()
        queue = f"{prefix}.work"
        await driver.consume(queue, seen, max_deliveries=3, ack_timeout_s=30.0)
        await driver.consume(queue, seen, max_deliveries=3, ack_timeout_s=30.0)
        sent = {str(n).encode() for n in range(20)}
        for payload in sorted(sent):
            await driver.publish(queue, payload)
        await seen.wait_until(lambda messages: {m.payload for m in messages} == sent)
        assert sorted(seen.payloads) == sorted(sent)

    async def test_failed_message_is_redelivered_then_dead_lettered(
        self, driver: BrokerPort, prefix: str
    ) -> None:
        queue = f"{prefix}.jobs"
        dead, attempts = self.inbox(), self.inbox()
        await driver.subscribe(dead_letter_subject(queue), dead)

        async def always_fails(message: Message) -> None:
            await attempts(message)
            raise RuntimeError("poison message")

        await driver.consume(queue, always_fails, max_deliveries=3, ack_timeout_s=30.0)
        await driver.publish(queue, b"poison", {"job": "7"})
        (letter,) = await dead.wait_for_count(1)
        assert [m.delivery for m in attempts.messages] == [1, 2, 3]
        assert attempts.payloads == [b"poison"] * 3
        assert letter.subject == f"{queue}.dead"
        assert letter.payload == b"poison"
        assert letter.headers["job"] == "7"
        assert letter.headers[DELIVERIES_HEADER] == "3"

    async def test_message_that_succeeds_on_retry_is_not_dead_lettered(
        self, driver: BrokerPort, prefix: str
    ) -> None:
        queue = f"{prefix}.jobs"
        dead, attempts = self.inbox(), self.inbox()
        await driver.subscribe(dead_letter_subject(queue), dead)

        async def flaky(message: Message) -> None:
            await attempts(message)
            if message.payload == b"poison" or message.delivery < 2:
                raise RuntimeError("fails on the first delivery")

        await driver.consume(queue, flaky, max_deliveries=2, ack_timeout_s=30.0)
        await driver.publish(queue, b"flaky")
        await attempts.wait_until(lambda ms: [m.delivery for m in ms] == [1, 2])
        await driver.publish(queue, b"poison")
        await dead.wait_for_count(1)
        assert dead.payloads == [b"poison"]
        assert [(m.payload, m.delivery) for m in attempts.messages] == [
            (b"flaky", 1),
            (b"flaky", 2),
            (b"poison", 1),
            (b"poison", 2),
        ]

    async def test_handler_past_its_ack_timeout_gets_a_redelivery(
        self, driver: BrokerPort, prefix: str
    ) -> None:
        queue = f"{prefix}.slow"
        done = self.inbox()
        release = asyncio.Event()

        async def stalls_first_time(message: Message) -> None:
            if message.delivery == 1:
                await release.wait()
            await done(message)

        await driver.consume(
            queue, stalls_first_time, max_deliveries=5, ack_timeout_s=self.ack_timeout_s
        )
        try:
            await driver.publish(queue, b"slow")
            (message,) = await done.wait_for_count(1)
            assert message.payload == b"slow"
            assert message.delivery >= 2
        finally:
            release.set()

    async def test_consume_with_concurrency_runs_that_many_handlers_at_once(
        self, driver: BrokerPort, prefix: str
    ) -> None:
        queue = f"{prefix}.parallel"
        started = self.inbox()
        release = asyncio.Event()

        async def waits(message: Message) -> None:
            await started(message)
            await release.wait()

        await driver.consume(queue, waits, max_deliveries=3, ack_timeout_s=30.0, concurrency=3)
        for n in range(4):
            await driver.publish(queue, str(n).encode())
        try:
            await started.wait_for_count(3)
            await asyncio.sleep(0.3)
            assert len(started.messages) == 3  # the fourth waits for a free slot
        finally:
            release.set()
        await started.wait_for_count(4)
        assert sorted(started.payloads) == [b"0", b"1", b"2", b"3"]

    async def test_consume_refuses_bad_arguments(self, driver: BrokerPort, prefix: str) -> None:
        inbox = self.inbox()
        with pytest.raises(BadRequest):
            await driver.consume(f"{prefix}.*", inbox)
        with pytest.raises(ValueError, match="max_deliveries"):
            await driver.consume(f"{prefix}.q", inbox, max_deliveries=0)
        with pytest.raises(ValueError, match="concurrency"):
            await driver.consume(f"{prefix}.q", inbox, concurrency=0)
        with pytest.raises(ValueError, match="ack_timeout_s"):
            await driver.consume(f"{prefix}.q", inbox, ack_timeout_s=0)

    async def test_ping(self, driver: BrokerPort) -> None:
        assert await driver.ping() is True

    async def test_close_twice_is_harmless(self, prefix: str) -> None:
        broker = await self.make_driver()
        await broker.subscribe(f"{prefix}.x", self.inbox())
        await broker.close()
        await broker.close()
