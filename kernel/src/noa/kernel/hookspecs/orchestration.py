"""Orchestration hooks: plugins contribute task types that tasks and workflow steps run."""

from __future__ import annotations

from typing import Any

from noa.plugin_sdk import Registry, hookspec


@hookspec
def noa_register_task_types(task_types: Registry[Any]) -> None:
    """Contribute task types: ``task_types.add("embed", task_type)``.

    A task type names its input and output schemas, its handler and its default
    timeout and retries; the orchestration plugin defines that interface. Called once
    per worker at assembly. Returns nothing.
    """
