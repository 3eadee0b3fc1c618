"""Hook implementations of the audit plugin."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
from noa.plugin_sdk import Host, PluginInfo, Registry, hookimpl
from noa.plugin_sdk.audit import AUDIT_QUEUE, AuditEvent
from noa.plugin_sdk.ports.broker import BROKER_STATE_KEY, Message
from noa.plugin_sdk.ports.storage import STORAGE_STATE_KEY

PLUGIN_INFO = PluginInfo(
    description="Audit events from the broker into the database",
    requires=("broker", "storage"),
)

_STATE = "noa.audit.consumer"

INSERT = (
    "INSERT INTO noa_audit_event "
    "(event_id, at, actor, action, resource, outcome, request_id, detail) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
    # A redelivered event (same payload, same id) is not stored twice.
    "ON CONFLICT (event_id) DO NOTHING"
)


@hookimpl
def noa_register_migrations(migrations: Registry[str]) -> None:
    migrations.add("audit", "noa.builtin_plugins.audit.piccolo_app")


@hookimpl
async def noa_startup(host: Host) -> None:
    storage = host.state[STORAGE_STATE_KEY]
    broker = host.state[BROKER_STATE_KEY]
    decode = msgspec.json.Decoder(AuditEvent).decode

    async def store(message: Message) -> None:
        event = decode(message.payload)
        # The payload's hash is the event's id.
        event_id = hashlib.sha256(message.payload).hexdigest()[:64]
        await storage.execute(
            INSERT,
            event_id,
            event.at,
            event.actor,
            event.action,
            event.resource,
            event.outcome,
            event.request_id,
            msgspec.json.encode(event.detail).decode(),
        )

    host.state[_STATE] = await broker.consume(AUDIT_QUEUE, store, max_deliveries=10)


@hookimpl
async def noa_shutdown(host: Host) -> None:
    consumer: Any = host.state.pop(_STATE, None)
    if consumer is not None:
        await consumer.unsubscribe()
