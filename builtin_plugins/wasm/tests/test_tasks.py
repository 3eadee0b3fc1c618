"""WASM plugins as task types (``wasm:<name>``, ``wasm:<name>.<entry>``) on a real
server with the orchestration plugin: a good guest's output is the task's, a hostile
guest's error code ends its task, and a wasm step runs in a workflow."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from noa.builtin_plugins.storage.config import StorageConfig
from noa.builtin_plugins.storage.migrate import Migrator, make_engine
from noa.plugin_sdk.testing.harness import KernelUnderTest, boot

PLUGINS = ["http", "storage", "broker", "orchestration", "wasm"]
FAST = {
    "poll_interval_s": 0.05,
    "lease_s": 0.5,
    "backoff_base_s": 0.01,
    "backoff_max_s": 0.05,
    "shutdown_grace_s": 0.0,
}
ADDEND = {
    "type": "object",
    "required": ["a"],
    "properties": {"a": {"type": "integer"}},
}


@pytest.fixture
async def data_dir(tmp_path: Path) -> str:
    """A data folder whose SQLite database holds the task and workflow tables."""
    folder = str(tmp_path / "data")
    apps = {"orchestration": "noa.builtin_plugins.orchestration.piccolo_app"}
    await Migrator(make_engine("sqlite", StorageConfig(), folder), apps).apply()
    return folder


@pytest.fixture
def server(data_dir: str, plugin_root: Path) -> Callable[[], Any]:
    @asynccontextmanager
    async def booted() -> AsyncIterator[KernelUnderTest]:
        config = {
            "server": {"data_dir": data_dir},
            "orchestration": FAST,
            "wasm": {"plugin_dir": str(plugin_root)},
        }
        async with boot(PLUGINS, config=config) as noa:
            yield noa

    return booted


async def submit(noa: KernelUnderTest, **body: Any) -> dict[str, Any]:
    response = await noa.client.post("/v1/tasks", json=body)
    assert response.status_code == 201, response.text
    task: dict[str, Any] = response.json()
    return task


async def finished(noa: KernelUnderTest, task_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        task: dict[str, Any] = (await noa.client.get(f"/v1/tasks/{task_id}")).json()
        if task["state"] in ("succeeded", "cancelled", "dead"):
            return task
        assert time.monotonic() < deadline, f"task still {task['state']}: {task}"
        await asyncio.sleep(0.02)


async def test_a_wasm_plugin_runs_as_a_task(
    server: Any, make_plugin: Callable[..., Path], wat: ModuleType
) -> None:
    make_plugin(
        "echo",
        wat.ECHO,
        entries={"other": {}, "run": {"input_schema": ADDEND, "description": "echoes"}},
    )
    make_plugin("garbage", b"\0asm\x01\0\0\0\xff\xff", module="plugin.wasm")
    async with server() as noa:
        task = await submit(noa, type="wasm:echo", input={"a": 1, "b": [True, None]})
        done = await finished(noa, task["id"])
        assert (done["state"], done["output"], done["attempts"]) == (
            "succeeded",
            {"a": 1, "b": [True, None]},
            1,
        )
        # Every entry by name; wasm:<name> is "run" when declared (not the first entry).
        other = await finished(noa, (await submit(noa, type="wasm:echo.other", input={}))["id"])
        assert (other["state"], other["output"]) == ("succeeded", {})
        # The timeout covers the plugin's own time limit plus the wait for a sandbox.
        assert task["timeout_s"] == 10.0 + 30.0
        # The entry's schema is checked at submit.
        refused = await noa.client.post("/v1/tasks", json={"type": "wasm:echo", "input": {}})
        assert refused.status_code == 422
        assert refused.json()["error"]["code"] == "invalid_input"
        assert "$: missing required property 'a'" in refused.json()["error"]["message"]
        # A plugin that fails to load is no task type.
        unknown = await noa.client.post("/v1/tasks", json={"type": "wasm:garbage", "input": {}})
        assert unknown.json()["error"]["code"] == "unknown_task_type"


@pytest.mark.parametrize(
    ("source", "manifest", "code", "attempts"),
    [
        ("UNREACHABLE", {}, "wasm_trap", 1),
        ("FAILS", {}, "wasm_failed", 1),
        ("NOT_JSON", {}, "wasm_bad_output", 1),
        ("GROW", {"limits": {"memory_mib": 2}}, "wasm_memory_limit", 1),
        # Out of fuel: the same input runs out again, so no retry.
        ("LOOP", {"limits": {"fuel": 1_000_000}}, "wasm_timeout", 1),
        # Past the wall-clock limit may be load: retried (max_retries 1 here).
        ("LOOP", {"limits": {"timeout_ms": 100}}, "wasm_timeout", 2),
    ],
)
async def test_a_hostile_guest_ends_its_task_dead_with_its_code(
    server: Any,
    make_plugin: Callable[..., Path],
    wat: ModuleType,
    source: str,
    manifest: dict[str, Any],
    code: str,
    attempts: int,
) -> None:
    make_plugin("hostile", getattr(wat, source), **manifest)
    make_plugin("echo", wat.ECHO)
    async with server() as noa:
        task = await submit(noa, type="wasm:hostile", input={}, max_retries=1)
        done = await finished(noa, task["id"])
        assert (done["state"], done["error"]["code"], done["attempts"]) == (
            "dead",
            code,
            attempts,
        )
        assert done["error"]["message"].startswith("hostile.run ")
        # The server and the other plugins carry on.
        echoed = await finished(noa, (await submit(noa, type="wasm:echo", input={"x": 1}))["id"])
        assert echoed["output"] == {"x": 1}


async def test_wasm_steps_in_a_workflow(
    server: Any, make_plugin: Callable[..., Path], wat: ModuleType
) -> None:
    make_plugin("echo", wat.ECHO, entries={"run": {"input_schema": ADDEND}})
    make_plugin("hostile", wat.UNREACHABLE)
    async with server() as noa:
        steps = [
            {"id": "first", "type": "wasm:echo", "input": {"a": 2}},
            {
                "id": "second",
                "type": "wasm:echo.run",
                "input": {"a": {"$ref": "first.output.a"}, "from": "first"},
                "depends_on": ["first"],
            },
        ]
        response = await noa.client.post("/v1/workflow", json={"steps": steps})
        assert response.status_code == 200, response.text
        done = response.json()
        assert done["state"] == "succeeded", done
        outputs = {s["id"]: s["output"] for s in done["steps"]}
        assert outputs == {"first": {"a": 2}, "second": {"a": 2, "from": "first"}}

        failing = [{"id": "trap", "type": "wasm:hostile", "input": {}}]
        failed = (await noa.client.post("/v1/workflow", json={"steps": failing})).json()
        assert failed["state"] == "failed"
        assert failed["steps"][0]["error"]["code"] == "wasm_trap"


async def test_the_assemblyscript_plugin_in_a_workflow(server: Any, textstats: Path) -> None:
    """The plugin written in AssemblyScript and built by ``scripts/setup`` runs as a
    workflow step, its output feeding the next step."""
    async with server() as noa:
        text = "Ünïcode words, and more words 🚀"
        steps = [
            {"id": "stats", "type": "wasm:textstats", "input": {"text": text}},
            {
                "id": "again",
                "type": "wasm:textstats",
                "input": {"text": {"$ref": "stats.output.words"}},
                "depends_on": ["stats"],
            },
        ]
        response = await noa.client.post("/v1/workflow", json={"steps": steps})
        assert response.status_code == 200, response.text
        done = response.json()
        # A reference to a number where the schema wants text fails that step alone.
        outputs = {s["id"]: (s["state"], s["output"]) for s in done["steps"]}
        assert outputs["stats"] == (
            "succeeded",
            {"words": len(text.split()), "chars": len(text), "bytes": len(text.encode())},
        )
        assert outputs["again"][0] == "failed"
