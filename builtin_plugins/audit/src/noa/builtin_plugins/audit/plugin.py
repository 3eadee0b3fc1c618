"""Hook implementations of the audit plugin."""

from __future__ import annotations

from typing import Any

import msgspec
from noa.plugin_sdk import Host, PluginInfo, Registry, hookimpl
from noa.plugin_sdk.audit import AUDIT_QUEUE, AuditEvent, store
from noa.plugin_sdk.ports.broker import BROKER_STATE_KEY, Message
from noa.plugin_sdk.ports.storage import STORAGE_STATE_KEY

PLUGIN_INFO = PluginInfo(
    description="Audit events from the broker into the database",
    requires=("broker", "storage"),
)

_STATE = "noa.audit.consumer"


@hookimpl
def noa_register_migrations(migrations: Registry[str]) -> None:
    migrations.add("audit", "noa.builtin_plugins.audit.piccolo_app")


@hookimpl
async def noa_startup(host: Host) -> None:
    storage = host.state[STORAGE_STATE_KEY]
    broker = host.state[BROKER_STATE_KEY]
    decode = msgspec.json.Decoder(AuditEvent).decode

    async def consume(message: Message) -> None:
        await store(storage, decode(message.payload), message.payload)

    host.state[_STATE] = await broker.consume(AUDIT_QUEUE, consume, max_deliveries=10)


@hookimpl
async def noa_shutdown(host: Host) -> None:
    consumer: Any = host.state.pop(_STATE, None)
    if consumer is not None:
        await consumer.unsubscribe()
