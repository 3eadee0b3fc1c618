"""The ``broker`` driver slot: subject-based publish/subscribe and work queues.

Drivers (``inprocess``, ``nats``) register in the entry-point group
``noa.drivers.broker``. Subjects follow NATS: dot-separated tokens, where in a
subscription ``*`` matches exactly one token and ``>`` (last token only) matches one or
more. ``orders.*`` matches ``orders.new`` but not ``orders`` or ``orders.eu.new``;
``orders.>`` matches ``orders.new`` and ``orders.eu.new`` but not ``orders``.

Two delivery forms share one subject space:

* :meth:`BrokerPort.subscribe` is fan-out, at most once: every matching subscription
  gets its own copy, in publish order; a handler that raises loses that message.
* :meth:`BrokerPort.consume` is a work queue, at least once: each message published to
  the queue subject goes to one of the queue's consumers. A handler that raises, or
  outlives ``ack_timeout_s`` (it is then cancelled), gets the message again with
  ``delivery`` one higher; after ``max_deliveries`` failed deliveries it is published
  to ``<queue>.dead`` (:func:`dead_letter_subject`) with the header
  :data:`DELIVERIES_HEADER`, where a plain subscriber can collect it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, runtime_checkable

import msgspec
from noa.plugin_sdk.errors import BadRequest

__all__ = [
    "BROKER_STATE_KEY",
    "DEAD_LETTER_SUFFIX",
    "DELIVERIES_HEADER",
    "BrokerPort",
    "Message",
    "MessageHandler",
    "Subscription",
    "check_consume_arguments",
    "dead_letter_subject",
    "subject_matches",
    "validate_subject",
]

#: The ``host.state`` key under which the broker plugin offers the started :class:`BrokerPort`.
BROKER_STATE_KEY = "noa.broker"

DEAD_LETTER_SUFFIX = ".dead"
# Set on a dead letter: how many deliveries the message had before it was given up.
DELIVERIES_HEADER = "noa-deliveries"


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """One delivered message. ``delivery`` counts from 1; it is above 1 only for a
    work-queue message that a handler failed before."""

    subject: str
    payload: bytes
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    delivery: int = 1


MessageHandler = Callable[[Message], Awaitable[None]]


@runtime_checkable
class Subscription(Protocol):
    """What :meth:`BrokerPort.subscribe` and :meth:`BrokerPort.consume` return."""

    async def unsubscribe(self) -> None:
        """Stop deliveries to this handler. Calling it again does nothing."""
        ...


@runtime_checkable
class BrokerPort(Protocol):
    """A message broker. Invalid subjects raise :class:`~noa.plugin_sdk.errors.BadRequest`."""

    async def publish(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        """Send ``payload`` to ``subject`` (no wildcards). Returns once the broker has it,
        not once handlers ran."""
        ...

    async def subscribe(self, subject: str, handler: MessageHandler) -> Subscription:
        """Call ``handler`` for every message published to a subject matching ``subject``
        (wildcards allowed), one message at a time, in publish order.

        The subscription is live when this returns: a message this broker publishes
        afterwards reaches it. A handler that raises is logged; the message is dropped.
        """
        ...

    async def consume(
        self,
        queue: str,
        handler: MessageHandler,
        *,
        max_deliveries: int = 5,
        ack_timeout_s: float = 30.0,
        concurrency: int = 1,
    ) -> Subscription:
        """Take work from the queue subject ``queue`` (no wildcards): up to
        ``concurrency`` messages at a time, each handler call in its own task (with 1,
        the default, one after the other in the order the broker hands them out).

        Returning acknowledges the message. Raising, or running past ``ack_timeout_s``
        (the handler is cancelled then), gives it back for redelivery (a driver may
        delay it); once it has failed ``max_deliveries`` times it goes to
        ``<queue>.dead`` instead. Several consumers
        of one queue share its messages. Messages published before the first consumer
        of a queue exists are kept only by a persistent driver (NATS JetStream).
        ``ValueError`` for ``max_deliveries < 1``, an ``ack_timeout_s`` not positive or
        ``concurrency < 1``.
        """
        ...

    async def ping(self) -> bool:
        """``True`` when the broker answers (the readiness check)."""
        ...

    async def close(self) -> None:
        """Stop every subscription and release connections. Calling it again does nothing."""
        ...


def check_consume_arguments(max_deliveries: int, ack_timeout_s: float, concurrency: int) -> None:
    """Raise ``ValueError`` for arguments :meth:`BrokerPort.consume` refuses (drivers
    call it so every driver refuses the same ones)."""
    if max_deliveries < 1:
        raise ValueError(f"max_deliveries must be at least 1, got {max_deliveries}")
    if not ack_timeout_s > 0:
        raise ValueError(f"ack_timeout_s must be positive, got {ack_timeout_s}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")


def dead_letter_subject(queue: str) -> str:
    """Where a work-queue message goes after its last failed delivery."""
    return queue + DEAD_LETTER_SUFFIX


def validate_subject(subject: str, *, wildcards: bool) -> None:
    """Raise :class:`BadRequest` unless ``subject`` is a valid subject (a valid pattern
    when ``wildcards``). Drivers call it so every driver refuses the same subjects."""
    tokens = subject.split(".")
    for index, token in enumerate(tokens):
        if not token or any(c.isspace() for c in token):
            raise BadRequest(f"invalid subject {subject!r}: empty token or whitespace")
        if token in ("*", ">"):
            if not wildcards:
                raise BadRequest(f"subject {subject!r} may not contain wildcards")
            if token == ">" and index != len(tokens) - 1:
                raise BadRequest(f"invalid subject {subject!r}: '>' must be the last token")
        elif "*" in token or ">" in token:
            raise BadRequest(f"invalid subject {subject!r}: a wildcard must be a whole token")


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether the subscription ``pattern`` matches the concrete ``subject``."""
    wanted = pattern.split(".")
    given = subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(given) > index
        if index >= len(given) or (token != "*" and token != given[index]):
            return False
    return len(wanted) == len(given)
