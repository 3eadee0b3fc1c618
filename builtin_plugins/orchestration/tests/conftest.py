"""Fixtures the orchestration tests share: a migrated data folder, a plugin contributing
task types, and booting a server on them."""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from noa.builtin_plugins.storage.config import StorageConfig
from noa.builtin_plugins.storage.migrate import Migrator, make_engine
from noa.plugin_sdk import PluginInfo, Registry, hookimpl
from noa.plugin_sdk.tasks import TaskType
from noa.plugin_sdk.testing.harness import KernelUnderTest, boot

PLUGINS = ["http", "storage", "broker", "orchestration"]
# Fast clocks so retries, leases and schedules take milliseconds.
FAST = {
    "poll_interval_s": 0.05,
    "lease_s": 0.5,
    "backoff_base_s": 0.01,
    "backoff_max_s": 0.05,
    "shutdown_grace_s": 0.0,
}
FINISHED = ("succeeded", "cancelled", "dead")

Booter = Callable[..., AbstractAsyncContextManager[KernelUnderTest]]


@pytest.fixture
async def data_dir(tmp_path: Path) -> str:
    """A data folder whose SQLite database holds the task table."""
    folder = str(tmp_path / "data")
    apps = {"orchestration": "noa.builtin_plugins.orchestration.piccolo_app"}
    await Migrator(make_engine("sqlite", StorageConfig(), folder), apps).apply()
    return folder


def task_plugin(task_types: dict[str, TaskType]) -> types.ModuleType:
    """A plugin module contributing ``task_types``, as a third-party plugin would."""
    module = types.ModuleType("task_kit")

    @hookimpl
    def noa_register_task_types(task_types: Registry[TaskType]) -> None:
        for name, task_type in kit.items():
            task_types.add(name, task_type)

    kit = task_types
    module.noa_register_task_types = noa_register_task_types  # type: ignore[attr-defined]
    module.PLUGIN_INFO = PluginInfo(description="task types of the tests")  # type: ignore[attr-defined]
    return module


@pytest.fixture
def serve(data_dir: str) -> Booter:
    """``async with serve(task_types, **orchestration_config) as noa`` boots a server
    on the migrated data folder with those task types."""

    @asynccontextmanager
    async def booted(
        task_types: dict[str, TaskType], config: dict[str, Any] | None = None, **settings: Any
    ) -> AsyncIterator[KernelUnderTest]:
        full: dict[str, Any] = {
            "server": {"data_dir": data_dir},
            "orchestration": {**FAST, **settings},
            **(config or {}),
        }
        async with boot(
            PLUGINS, config=full, extra_plugins={"task_kit": task_plugin(task_types)}
        ) as noa:
            yield noa

    return booted


async def _wait_finished(
    noa: KernelUnderTest, task_id: str, timeout_s: float = 10.0, states: tuple[str, ...] = FINISHED
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        response = await noa.client.get(f"/v1/tasks/{task_id}")
        assert response.status_code == 200, response.text
        task: dict[str, Any] = response.json()
        if task["state"] in states:
            return task
        assert time.monotonic() < deadline, f"task still {task['state']}: {task}"
        await asyncio.sleep(0.02)


async def _submit(noa: KernelUnderTest, **body: Any) -> dict[str, Any]:
    response = await noa.client.post("/v1/tasks", json=body)
    assert response.status_code == 201, response.text
    task: dict[str, Any] = response.json()
    return task


@pytest.fixture
def finished() -> Callable[..., Any]:
    """``await finished(noa, task_id)``: the task once it is succeeded, cancelled or dead."""
    return _wait_finished


@pytest.fixture
def submit() -> Callable[..., Any]:
    """``await submit(noa, type=..., input=...)``: POST /v1/tasks, asserting 201."""
    return _submit
