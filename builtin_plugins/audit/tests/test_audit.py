"""Audit events recorded by a plugin end up in the database, once each."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import msgspec
from noa.builtin_plugins.storage.config import StorageConfig
from noa.builtin_plugins.storage.migrate import Migrator, make_engine
from noa.plugin_sdk.audit import AUDIT_QUEUE, AuditEvent, record
from noa.plugin_sdk.ports.broker import BROKER_STATE_KEY
from noa.plugin_sdk.ports.storage import STORAGE_STATE_KEY
from noa.plugin_sdk.testing.contracts import PluginContract

PLUGINS = ["http", "broker", "storage", "audit"]


class TestAuditPluginContract(PluginContract):
    plugin = "audit"
    needs = ("broker", "storage")


async def rows(storage: Any, expected: int) -> list[dict[str, Any]]:
    for _ in range(100):
        found = await storage.fetch("SELECT * FROM noa_audit_event ORDER BY at")
        if len(found) >= expected:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {expected} audit rows, found {len(found)}")


async def test_recorded_events_are_stored_once(noa_boot: Any, tmp_path: Path) -> None:
    data_dir = str(tmp_path / "data")
    config = StorageConfig()
    await Migrator(
        make_engine("sqlite", config, data_dir), {"audit": "noa.builtin_plugins.audit.piccolo_app"}
    ).apply()
    async with noa_boot(PLUGINS, config={"server": {"data_dir": data_dir}}) as noa:
        state = noa.kernel.state
        first = AuditEvent(
            actor="key:ops",
            action="plugins.reload",
            resource="plugin:hello",
            request_id="req-1",
            detail={"reason": "new version"},
        )
        second = AuditEvent(actor="anonymous", action="auth.login", outcome="denied")
        await record(state, first)
        await record(state, second)
        # A redelivered copy of the first must not become a second row.
        await state[BROKER_STATE_KEY].publish(AUDIT_QUEUE, msgspec.json.encode(first))
        await rows(state[STORAGE_STATE_KEY], 2)
        # Publish one more event last: once it is stored, the duplicate before it was handled.
        await record(state, AuditEvent(actor="system", action="marker"))
        stored = await rows(state[STORAGE_STATE_KEY], 3)
    assert [(r["actor"], r["action"], r["outcome"]) for r in stored] == [
        ("key:ops", "plugins.reload", "succeeded"),
        ("anonymous", "auth.login", "denied"),
        ("system", "marker", "succeeded"),
    ]
    assert stored[0]["resource"] == "plugin:hello"
    assert stored[0]["request_id"] == "req-1"
    assert json.loads(stored[0]["detail"]) == {"reason": "new version"}


async def test_without_a_broker_an_event_is_logged_not_lost_silently(caplog: Any) -> None:
    await record({}, AuditEvent(actor="system", action="startup"))
    assert any("audit event not stored (no broker enabled)" in r.message for r in caplog.records)
