"""``InProcessBroker``: a :class:`~noa.plugin_sdk.ports.BrokerPort` inside one process, on asyncio.

It is the ``inprocess`` driver of the broker slot (the embedded profile) and the
reference driver the SDK's broker contract is checked against.

Every subscription and every consumer is one task reading its own ``asyncio.Queue``, so
a handler sees messages one at a time and in publish order (a consumer with
``concurrency`` above 1 runs that many handler calls at once, each in a task of its
own), and a slow handler never blocks the publisher. Nothing survives the process: a
work queue exists from its first :meth:`~InProcessBroker.consume` until
:meth:`~InProcessBroker.close`, and keeps messages published while it has no consumer.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import NamedTuple

from noa.plugin_sdk.errors import ServiceUnavailable
from noa.plugin_sdk.ports.broker import (
    DELIVERIES_HEADER,
    Message,
    MessageHandler,
    Subscription,
    check_consume_arguments,
    dead_letter_subject,
    subject_matches,
    validate_subject,
)

__all__ = ["InProcessBroker"]

logger = logging.getLogger(__name__)


class _Work(NamedTuple):
    subject: str
    payload: bytes
    headers: dict[str, str]
    failures: int


class _Worker(abc.ABC):
    """A task feeding one handler from one queue; what subscribe and consume return."""

    def __init__(self, broker: InProcessBroker, pattern: str, handler: MessageHandler) -> None:
        self.pattern = pattern
        self._broker = broker
        self._handler = handler
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"noa-broker {self.pattern}")

    async def unsubscribe(self) -> None:
        self._broker._forget(self)
        self._stopping = True
        task, self._task = self._task, None
        if task is None or task is asyncio.current_task():
            return  # from inside the handler: the loop ends once the handler returns
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    @abc.abstractmethod
    async def _run(self) -> None:
        """Feed the handler until stopped (subscription and work-queue differ)."""


class _Subscriber(_Worker):
    def __init__(self, broker: InProcessBroker, pattern: str, handler: MessageHandler) -> None:
        super().__init__(broker, pattern, handler)
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()

    async def _run(self) -> None:
        while not self._stopping:
            message = await self.inbox.get()
            try:
                await self._handler(message)
            except Exception:
                logger.exception("subscriber of %r failed on %r", self.pattern, message.subject)


class _Consumer(_Worker):
    def __init__(
        self,
        broker: InProcessBroker,
        queue: str,
        handler: MessageHandler,
        work: asyncio.Queue[_Work],
        max_deliveries: int,
        ack_timeout_s: float,
        concurrency: int,
    ) -> None:
        super().__init__(broker, queue, handler)
        self._work = work
        self._max_deliveries = max_deliveries
        self._ack_timeout_s = ack_timeout_s
        self._concurrency = concurrency
        self._running: set[asyncio.Task[None]] = set()
        self._unsubscriber: asyncio.Task[None] | None = None

    async def unsubscribe(self) -> None:
        current = asyncio.current_task()
        if current in self._running:  # from inside a handler: it finishes, the others stop
            self._unsubscriber = current
        await super().unsubscribe()

    async def _run(self) -> None:
        if self._concurrency == 1:
            while not self._stopping:
                await self._deliver(await self._work.get())
            return
        slots = asyncio.Semaphore(self._concurrency)
        try:
            while not self._stopping:
                await slots.acquire()
                try:
                    item = await self._work.get()
                except BaseException:
                    slots.release()
                    raise
                task = asyncio.create_task(self._deliver(item))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
                task.add_done_callback(lambda _: slots.release())
        finally:
            others = [t for t in self._running if t is not self._unsubscriber]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

    async def _deliver(self, item: _Work) -> None:
        delivery = item.failures + 1
        message = Message(
            subject=item.subject,
            payload=item.payload,
            headers=dict(item.headers),
            delivery=delivery,
        )
        try:
            async with asyncio.timeout(self._ack_timeout_s):
                await self._handler(message)
        except asyncio.CancelledError:
            # Stopped mid-message: give it back to the queue's other consumers as is.
            self._work.put_nowait(item)
            raise
        except Exception:
            logger.warning(
                "consumer of %r failed delivery %d of %d",
                self.pattern,
                delivery,
                self._max_deliveries,
                exc_info=True,
            )
            if delivery >= self._max_deliveries:
                headers = {**item.headers, DELIVERIES_HEADER: str(delivery)}
                await self._broker.publish(dead_letter_subject(self.pattern), item.payload, headers)
            else:
                self._work.put_nowait(item._replace(failures=delivery))


class InProcessBroker:
    """A broker inside one process and one event loop; NATS subject semantics."""

    def __init__(self) -> None:
        self._subscribers: list[_Subscriber] = []
        self._consumers: list[_Consumer] = []
        self._queues: dict[str, asyncio.Queue[_Work]] = {}
        self._closed = False

    async def publish(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        self._check_open()
        validate_subject(subject, wildcards=False)
        copied = dict(headers or {})
        for subscriber in self._subscribers:
            if subject_matches(subscriber.pattern, subject):
                subscriber.inbox.put_nowait(
                    Message(subject=subject, payload=bytes(payload), headers=dict(copied))
                )
        work = self._queues.get(subject)
        if work is not None:
            work.put_nowait(_Work(subject, bytes(payload), copied, 0))

    async def subscribe(self, subject: str, handler: MessageHandler) -> Subscription:
        self._check_open()
        validate_subject(subject, wildcards=True)
        subscriber = _Subscriber(self, subject, handler)
        self._subscribers.append(subscriber)
        subscriber.start()
        return subscriber

    async def consume(
        self,
        queue: str,
        handler: MessageHandler,
        *,
        max_deliveries: int = 5,
        ack_timeout_s: float = 30.0,
        concurrency: int = 1,
    ) -> Subscription:
        self._check_open()
        validate_subject(queue, wildcards=False)
        check_consume_arguments(max_deliveries, ack_timeout_s, concurrency)
        work = self._queues.setdefault(queue, asyncio.Queue())
        consumer = _Consumer(self, queue, handler, work, max_deliveries, ack_timeout_s, concurrency)
        self._consumers.append(consumer)
        consumer.start()
        return consumer

    async def ping(self) -> bool:
        return not self._closed

    async def close(self) -> None:
        self._closed = True
        for worker in [*self._subscribers, *self._consumers]:
            await worker.unsubscribe()
        self._queues.clear()

    def _forget(self, worker: _Worker) -> None:
        if isinstance(worker, _Subscriber) and worker in self._subscribers:
            self._subscribers.remove(worker)
        elif isinstance(worker, _Consumer) and worker in self._consumers:
            self._consumers.remove(worker)

    def _check_open(self) -> None:
        if self._closed:
            raise ServiceUnavailable("the in-process broker is closed")
