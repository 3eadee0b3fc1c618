"""WASM plugins as task types (and so as workflow steps): ``wasm:<name>`` runs the
plugin's default entry (``run`` if it declares one, else its first), and
``wasm:<name>.<entry>`` any entry.

The task types are made from the plugins :meth:`WasmHost.scan` found at configure time,
so they exist whenever the orchestration plugin collects them; a plugin added later
(admin reload) becomes a task type at the next start. A run calls
:meth:`WasmHost.invoke`, so it uses the module loaded now.

- Input: the task's input (a JSON object), checked at submit against the entry's
  ``input_schema`` and ``wasm.max_input_bytes`` (422 ``invalid_input``).
- A guest failure is deterministic (same module, same input, same outcome), so it ends
  the task ``dead`` at once with the call's code (``wasm_trap``, ``wasm_memory_limit``,
  ``wasm_output_too_large``, ``wasm_bad_output``, ``wasm_failed``, also
  ``wasm_plugin_not_found`` when a reload dropped the plugin), and so does running out
  of fuel (``wasm_timeout``). Running past the wall-clock limit (``wasm_timeout``) may
  be load, so it is retried like any failed run.
- The task's timeout is the plugin's ``timeout_ms`` plus :data:`QUEUE_MARGIN_S` for
  waiting on a busy sandbox; the plugin's own deadline ends a call first.
- A plugin granted a writable folder may have an effect: its task types are not
  idempotent (an interrupted run ends the task ``dead`` instead of running it again).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from noa.builtin_plugins.wasm.manifest import Entry, Manifest
from noa.builtin_plugins.wasm.schema import validate
from noa.builtin_plugins.wasm.service import WasmHost
from noa.plugin_sdk import ApiError
from noa.plugin_sdk.tasks import TaskContext, TaskFailed, TaskType

__all__ = ["QUEUE_MARGIN_S", "default_entry", "task_types"]

QUEUE_MARGIN_S = 30.0
PREFIX = "wasm:"


def default_entry(manifest: Manifest) -> str:
    """The entry ``wasm:<name>`` runs: ``run`` if declared, else the first declared."""
    return "run" if "run" in manifest.entries else next(iter(manifest.entries))


def task_types(wasm: WasmHost) -> dict[str, TaskType]:
    """A task type per entry of every plugin the scan found sound, by task type name."""
    found: dict[str, TaskType] = {}
    for plugin in wasm.declared():
        manifest = plugin.manifest
        timeout_s = manifest.resolved_limits(wasm.config).timeout_ms / 1000 + QUEUE_MARGIN_S
        writable = any(not d.read_only for d in manifest.capabilities.dirs)
        made = {
            name: _task_type(wasm, manifest.name, name, entry, timeout_s, not writable)
            for name, entry in manifest.entries.items()
        }
        found[PREFIX + manifest.name] = made[default_entry(manifest)]
        found.update((f"{PREFIX}{manifest.name}.{name}", made[name]) for name in made)
    return found


def _task_type(
    wasm: WasmHost, plugin: str, entry: str, spec: Entry, timeout_s: float, idempotent: bool
) -> TaskType:
    call = f"{plugin}.{entry}"

    def check(raw: dict[str, Any]) -> dict[str, Any]:
        problem = validate(raw, spec.input_schema)
        if problem:
            raise ValueError(f"input fails the schema of {call}: {problem}")
        size = len(msgspec.json.encode(raw))
        if size > wasm.config.max_input_bytes:
            raise ValueError(
                f"input is {size} bytes; wasm.max_input_bytes is {wasm.config.max_input_bytes}"
            )
        return raw

    async def run(ctx: TaskContext, payload: dict[str, Any]) -> Any:
        try:
            return await wasm.invoke(plugin, entry, payload)
        except ApiError as exc:
            raise _failure(exc) from None

    run.__qualname__ = f"wasm:{call}"
    return TaskType(
        run,
        validate=check,
        timeout_s=timeout_s,
        idempotent=idempotent,
        description=spec.description or f"WASM plugin {plugin}, entry {entry}",
    )


def _failure(exc: ApiError) -> TaskFailed:
    """How a failed call ends the run: only a wall-clock timeout is worth retrying."""
    details = exc.details if isinstance(exc.details, Mapping) else {}
    retry = exc.code == "wasm_timeout" and details.get("limit") == "time"
    return TaskFailed(exc.message, code=exc.code or "wasm_failed", retry=retry)
