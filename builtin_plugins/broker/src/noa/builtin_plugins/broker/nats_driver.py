"""The ``nats`` driver of the broker slot, on NATS JetStream (nats-py).

- Every subject is published as ``<prefix>.<subject>`` into one stream that captures
  ``<prefix>.>``; :meth:`NatsBroker.publish` returns once JetStream has acknowledged
  the message (stored), retrying for up to ``publish_timeout_s`` while NATS is away,
  then raising :class:`ServiceUnavailable`.
- :meth:`subscribe` is a core NATS subscription (fan-out, at most once).
- :meth:`consume` is a durable pull consumer named after the queue, so every worker and
  replica consuming one queue shares its messages, and messages published while no
  consumer ran are kept. A handler that raises or outlives ``ack_timeout_s`` gets the
  message back at once (NAK); after ``max_deliveries`` it goes to ``<queue>.dead``. A
  worker that dies mid-message has it redelivered after the consumer's ack wait.
- The client never gives up reconnecting (nats-py stops after about two minutes by
  default); while disconnected, :meth:`ping` is false.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from noa.builtin_plugins.broker.config import BrokerConfig
from noa.plugin_sdk.errors import ServiceUnavailable
from noa.plugin_sdk.ports.broker import (
    DELIVERIES_HEADER,
    Message,
    MessageHandler,
    check_consume_arguments,
    dead_letter_subject,
    validate_subject,
)

__all__ = ["NatsBroker"]

log = logging.getLogger("noa.broker")

# Extra time JetStream waits for an ack beyond the handler's own timeout before it
# redelivers on its own (the case of a worker that died mid-message).
ACK_WAIT_MARGIN_S = 5.0
# How long closing waits for a consumer's loop to end.
STOP_TIMEOUT_S = 5.0


MSG_ID = "Nats-Msg-Id"


def _user_headers(msg: Msg) -> dict[str, str]:
    """The headers the publisher set (without the de-duplication id this driver adds)."""
    return {k: v for k, v in (msg.headers or {}).items() if k != MSG_ID}


class _Subscription:
    def __init__(self, stop: Any) -> None:
        self._stop = stop
        self._done = False

    async def unsubscribe(self) -> None:
        if not self._done:
            self._done = True
            await self._stop()


class NatsBroker:
    def __init__(
        self,
        servers: list[str],
        *,
        stream: str = "NOA",
        prefix: str = "noa",
        max_age_s: float = 7 * 24 * 3600.0,
        max_bytes: int = 1 << 30,
        publish_timeout_s: float = 5.0,
        connect_timeout_s: float = 2.0,
    ) -> None:
        self._servers = servers
        self._stream = stream
        self._prefix = prefix
        self._max_age_s = max_age_s
        self._max_bytes = max_bytes
        self._publish_timeout_s = publish_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._nc: Client | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._subscriptions: list[_Subscription] = []
        self._closed = False

    @classmethod
    def from_config(cls, config: BrokerConfig) -> NatsBroker:
        servers = [s.strip() for s in config.nats_url.reveal().split(",") if s.strip()]
        for server in servers:
            if not server.startswith(("nats://", "tls://", "ws://", "wss://")):
                raise ValueError("a NATS URL starts with nats://, tls://, ws:// or wss://")
        return cls(
            servers,
            stream=config.nats_stream,
            prefix=config.subject_prefix,
            max_age_s=config.stream_max_age_s,
            max_bytes=config.stream_max_bytes,
            publish_timeout_s=config.publish_timeout_s,
            connect_timeout_s=config.connect_timeout_s,
        )

    # -- connection ------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and make sure the stream exists; if NATS is not there yet, keep trying
        in the background (the broker is not ready meanwhile)."""
        try:
            await self._connect()
        except Exception as exc:
            log.warning("NATS at %s unreachable (%s); retrying", self._servers, exc)
            self._connecting = asyncio.create_task(self._connect_forever())

    async def _connect(self) -> None:
        nc = Client()
        connecting = nc.connect(
            servers=self._servers,
            connect_timeout=self._connect_timeout_s,
            allow_reconnect=True,
            max_reconnect_attempts=-1,  # never give up (the library's default is ~2 min)
            reconnect_time_wait=0.5,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        try:
            # Never giving up applies to the first connection too: bound that one here,
            # and keep retrying in the background instead.
            await asyncio.wait_for(connecting, self._connect_timeout_s + 1.0)
        except BaseException:
            with contextlib.suppress(Exception):
                await nc.close()
            raise
        js = nc.jetstream()
        config = StreamConfig(
            name=self._stream,
            subjects=[f"{self._prefix}.>"],
            max_age=self._max_age_s,
            max_bytes=self._max_bytes,
            storage=StorageType.FILE,
        )
        try:
            await js.stream_info(self._stream)
            await js.update_stream(config)
        except NotFoundError:
            await js.add_stream(config)
        self._nc = nc

    async def _connect_forever(self) -> None:
        while not self._closed:
            await asyncio.sleep(1.0)
            try:
                await self._connect()
            except Exception as exc:
                log.debug("NATS still unreachable: %s", exc)
            else:
                log.info("connected to NATS at %s", self._servers)
                return

    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS client error: %s", exc)

    async def _on_disconnected(self) -> None:
        if not self._closed:
            log.warning("disconnected from NATS; reconnecting")

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS")

    def _client(self) -> Client:
        if self._nc is None or self._nc.is_closed:
            raise ServiceUnavailable(
                "the broker (NATS) is not connected", code="broker_unavailable"
            )
        return self._nc

    def _full(self, subject: str) -> str:
        return f"{self._prefix}.{subject}"

    def _short(self, subject: str) -> str:
        return subject[len(self._prefix) + 1 :]

    # -- BrokerPort ------------------------------------------------------------------------

    async def publish(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        validate_subject(subject, wildcards=False)
        deadline = time.monotonic() + self._publish_timeout_s
        # One id for every try: JetStream drops a retry whose first try did arrive.
        sent_headers = {**(headers or {}), MSG_ID: uuid.uuid4().hex}
        while True:
            try:
                js = self._client().jetstream()
                remaining = max(0.5, deadline - time.monotonic())
                await js.publish(
                    self._full(subject),
                    bytes(payload),
                    timeout=min(2.0, remaining),
                    headers=sent_headers,
                )
                return
            except (NatsError, ServiceUnavailable, OSError) as exc:
                if time.monotonic() >= deadline:
                    raise ServiceUnavailable(
                        f"the broker (NATS) did not acknowledge the message within "
                        f"{self._publish_timeout_s:g} s: {type(exc).__name__}",
                        code="broker_unavailable",
                    ) from None
                await asyncio.sleep(0.2)

    async def subscribe(self, subject: str, handler: MessageHandler) -> _Subscription:
        validate_subject(subject, wildcards=True)
        nc = self._client()

        async def deliver(msg: Msg) -> None:
            try:
                await handler(
                    Message(
                        subject=self._short(msg.subject),
                        payload=msg.data,
                        headers=_user_headers(msg),
                    )
                )
            except Exception:
                log.exception("subscriber of %r failed on a message; dropped", subject)

        sub = await nc.subscribe(self._full(subject), cb=deliver)
        await nc.flush()  # the subscription is live on the server when this returns
        subscription = _Subscription(sub.unsubscribe)
        self._subscriptions.append(subscription)
        return subscription

    async def consume(
        self,
        queue: str,
        handler: MessageHandler,
        *,
        max_deliveries: int = 5,
        ack_timeout_s: float = 30.0,
        concurrency: int = 1,
    ) -> _Subscription:
        validate_subject(queue, wildcards=False)
        check_consume_arguments(max_deliveries, ack_timeout_s, concurrency)
        js = self._client().jetstream()
        durable = "q_" + hashlib.sha256(queue.encode()).hexdigest()[:24]
        psub = await js.pull_subscribe(
            self._full(queue),
            durable=durable,
            stream=self._stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=ack_timeout_s + ACK_WAIT_MARGIN_S,
                deliver_policy=DeliverPolicy.ALL,
                max_deliver=-1,  # dead letters are ours: we count deliveries below
            ),
        )
        stopping = asyncio.Event()
        running: set[asyncio.Task[None]] = set()

        def deliver(msg: Msg) -> Coroutine[Any, Any, None]:
            return self._handle(queue, msg, handler, max_deliveries, ack_timeout_s)

        task = asyncio.create_task(self._pull(queue, psub, deliver, concurrency, running, stopping))

        async def stop() -> None:
            # A handler unsubscribing its own consumer finishes; the others are cancelled
            # (their messages come back after the ack wait).
            current = asyncio.current_task()
            if current is not None:
                running.discard(current)
            # The flag as well as the cancel: nats-py's fetch can swallow a cancellation
            # that lands at the wrong moment, and the loop would then fetch forever.
            stopping.set()
            task.cancel()
            await asyncio.wait({task}, timeout=STOP_TIMEOUT_S)
            if not task.done():
                log.warning("consumer of %r did not stop within %s s", queue, STOP_TIMEOUT_S)
            elif not task.cancelled():
                task.exception()  # retrieved, so asyncio does not log it as lost
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

        subscription = _Subscription(stop)
        self._subscriptions.append(subscription)
        return subscription

    async def _pull(
        self,
        queue: str,
        psub: Any,
        deliver: Callable[[Msg], Coroutine[Any, Any, None]],
        concurrency: int,
        running: set[asyncio.Task[None]],
        stopping: asyncio.Event,
    ) -> None:
        """Fetch as many messages as there are free handler slots (waiting for one to
        free up when all are busy); each is handled in a task of its own."""
        try:
            while not stopping.is_set():
                if len(running) >= concurrency:
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    batch = await psub.fetch(concurrency - len(running), timeout=1.0)
                except NatsTimeoutError:
                    continue
                except (NatsError, OSError) as exc:
                    log.debug("fetch from %r failed (%s); retrying", queue, exc)
                    await asyncio.sleep(0.5)
                    continue
                for msg in batch:
                    handling = asyncio.create_task(deliver(msg))
                    running.add(handling)
                    handling.add_done_callback(running.discard)
        finally:
            for handling in running:
                handling.cancel()
            if running:
                await asyncio.wait(running, timeout=STOP_TIMEOUT_S)

    async def _handle(
        self,
        queue: str,
        msg: Msg,
        handler: MessageHandler,
        max_deliveries: int,
        ack_timeout_s: float,
    ) -> None:
        delivery = msg.metadata.num_delivered
        headers = _user_headers(msg)
        message = Message(subject=queue, payload=msg.data, headers=headers, delivery=delivery)
        try:
            async with asyncio.timeout(ack_timeout_s):
                await handler(message)
        except Exception as exc:
            if delivery >= max_deliveries:
                log.warning(
                    "message on %r failed %d times (last: %s); moved to %r",
                    queue,
                    delivery,
                    type(exc).__name__,
                    dead_letter_subject(queue),
                )
                await self.publish(
                    dead_letter_subject(queue),
                    msg.data,
                    {**headers, DELIVERIES_HEADER: str(delivery)},
                )
                await msg.term()
            else:
                await msg.nak()
            return
        await msg.ack()

    async def ping(self) -> bool:
        nc = self._nc
        if nc is None or not nc.is_connected:
            return False
        try:
            await nc.flush(timeout=1)
        except Exception:
            return False
        return True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.drain()
