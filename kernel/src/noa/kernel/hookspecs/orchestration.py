"""Orchestration hooks: plugins contribute task types that tasks and workflow steps run."""

from __future__ import annotations

from noa.plugin_sdk import Host, Registry, hookspec
from noa.plugin_sdk.tasks import TaskType


@hookspec
def noa_register_task_types(task_types: Registry[TaskType], host: Host) -> None:
    """Contribute task types: ``task_types.add("embed", TaskType(handler, ...))``.

    A :class:`~noa.plugin_sdk.tasks.TaskType` holds the handler, how its input is
    validated, and its default timeout and retries. ``host`` gives the plugin's config
    and shared state (an implementation may leave it out). Called by the orchestration
    plugin once per worker at startup. Returns nothing.
    """
