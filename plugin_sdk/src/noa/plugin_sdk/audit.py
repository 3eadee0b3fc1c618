"""Audit events: who did what to which resource, and what came of it.

A plugin records one with :func:`record` (admin actions, auth decisions ...). It goes
through the broker to the audit plugin, which stores it in the database, so recording
never waits on the database and events from every worker and replica end up in one
table. Without a broker the event is only logged.

:func:`store` writes one event straight into that table: for the audit plugin's
consumer, and for a one-off process (a CLI command) whose in-process broker has no
consumer.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any, Literal

import msgspec

__all__ = ["AUDIT_QUEUE", "AuditEvent", "record", "store"]

#: The work queue audit events travel on.
AUDIT_QUEUE = "audit.events"

log = logging.getLogger("noa.audit")


class AuditEvent(msgspec.Struct, frozen=True, kw_only=True):
    actor: str  # who: a user, an API key id, "system"
    action: str  # what: "plugins.reload", "auth.login" ...
    resource: str = ""  # on what: "plugin:hello", "collection:docs"
    outcome: Literal["allowed", "denied", "succeeded", "failed"] = "succeeded"
    request_id: str | None = None
    detail: dict[str, Any] = msgspec.field(default_factory=dict)
    at: float = msgspec.field(default_factory=time.time)  # seconds since the epoch, UTC


_INSERT = (
    "INSERT INTO noa_audit_event "
    "(event_id, at, actor, action, resource, outcome, request_id, detail) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
    # A redelivered event (same payload, same id) is not stored twice.
    "ON CONFLICT (event_id) DO NOTHING"
)


async def store(storage: Any, event: AuditEvent, payload: bytes | None = None) -> None:
    """Insert ``event`` into ``noa_audit_event`` (the audit plugin's table) through the
    storage port ``storage``. ``payload`` is its encoded form when already at hand; the
    SHA-256 of it is the row's id, so storing one event twice stores one row."""
    payload = payload if payload is not None else msgspec.json.encode(event)
    await storage.execute(
        _INSERT,
        hashlib.sha256(payload).hexdigest(),
        event.at,
        event.actor,
        event.action,
        event.resource,
        event.outcome,
        event.request_id,
        msgspec.json.encode(event.detail).decode(),
    )


async def record(state: dict[str, Any], event: AuditEvent) -> None:
    """Publish ``event`` on the audit queue of the broker in ``host.state``."""
    from noa.plugin_sdk.ports.broker import BROKER_STATE_KEY

    broker = state.get(BROKER_STATE_KEY)
    payload = msgspec.json.encode(event)
    if broker is None:
        log.warning("audit event not stored (no broker enabled): %s", payload.decode())
        return
    await broker.publish(AUDIT_QUEUE, payload)
