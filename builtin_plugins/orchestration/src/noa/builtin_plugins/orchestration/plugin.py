"""Hook implementations of the orchestration plugin.

It keeps tasks in the storage slot (its migration runs with the others), runs a worker
in every process that consumes the broker's work queue, publishes progress events on
the broker, and serves ``/v1/tasks`` and ``/v1/workflows`` (with their SSE streams). Task
types come from every plugin's ``noa_register_task_types`` (its own: ``http_request``);
``noa tasks`` is its command.
"""

from __future__ import annotations

from typing import Any

from noa.builtin_plugins.orchestration.config import OrchestrationConfig
from noa.plugin_sdk import (
    Host,
    PluginConfig,
    PluginInfo,
    PluginStartError,
    Registry,
    RouteGroup,
    hookimpl,
)
from noa.plugin_sdk.metrics import metrics_of
from noa.plugin_sdk.ports.broker import BROKER_STATE_KEY
from noa.plugin_sdk.ports.storage import STORAGE_STATE_KEY
from noa.plugin_sdk.tasks import TaskType

PLUGIN_INFO = PluginInfo(
    description="Orchestration: durable tasks with retries, dead letters and backpressure",
    after=("storage", "broker", "observability"),
)

_TASKS_KEY = "noa.orchestration.tasks"
_WORKER_KEY = "noa.orchestration.worker"
_WORKFLOWS_KEY = "noa.orchestration.workflows"
_SCHEDULES_KEY = "noa.orchestration.schedules"


@hookimpl
def noa_register_config_sections(sections: Registry[type[PluginConfig]]) -> None:
    sections.add("orchestration", OrchestrationConfig)


@hookimpl
def noa_register_migrations(migrations: Registry[str]) -> None:
    migrations.add("orchestration", "noa.builtin_plugins.orchestration.piccolo_app")


@hookimpl
def noa_configure(host: Host) -> None:
    from noa.builtin_plugins.orchestration.schedules import Schedules
    from noa.builtin_plugins.orchestration.service import Tasks
    from noa.builtin_plugins.orchestration.workflows import Workflows

    config = host.section("orchestration", OrchestrationConfig)
    if config.lease_s <= 2 * config.poll_interval_s:
        raise PluginStartError(
            "orchestration",
            f"orchestration.lease_s ({config.lease_s:g}) must be more than twice "
            f"orchestration.poll_interval_s ({config.poll_interval_s:g}): leases are renewed "
            "once a poll",
        )
    tasks = host.state[_TASKS_KEY] = Tasks(config)
    tasks.workflows = host.state[_WORKFLOWS_KEY] = Workflows(config)
    host.state[_SCHEDULES_KEY] = Schedules(tasks)


@hookimpl
def noa_register_routes(routes: Registry[RouteGroup], host: Host) -> None:
    from noa.builtin_plugins.orchestration.api import task_handlers
    from noa.builtin_plugins.orchestration.schedule_api import schedule_handlers
    from noa.builtin_plugins.orchestration.workflow_api import workflow_handlers

    handlers = task_handlers(host.state[_TASKS_KEY])
    routes.add(
        "orchestration", RouteGroup(handlers=tuple(handlers), tags=("tasks",), scope="tasks:admin")
    )
    every = schedule_handlers(host.state[_SCHEDULES_KEY])
    routes.add(
        "schedules", RouteGroup(handlers=tuple(every), tags=("schedules",), scope="tasks:admin")
    )
    flows = workflow_handlers(host.state[_WORKFLOWS_KEY])
    routes.add(
        "workflows", RouteGroup(handlers=tuple(flows), tags=("workflows",), scope="tasks:admin")
    )


@hookimpl
def noa_register_task_types(task_types: Registry[Any], host: Host) -> None:
    from noa.builtin_plugins.orchestration.http_task import http_request_type

    config = host.section("orchestration", OrchestrationConfig)
    task_types.add("http_request", http_request_type(config))


@hookimpl
def noa_register_commands(commands: Registry[Any]) -> None:
    from noa.builtin_plugins.orchestration.cli import tasks

    commands.add("tasks", tasks)


@hookimpl
async def noa_startup(host: Host) -> None:
    from noa.builtin_plugins.orchestration.events import Events
    from noa.builtin_plugins.orchestration.store import TaskStore
    from noa.builtin_plugins.orchestration.worker import Worker
    from noa.builtin_plugins.orchestration.workflow_store import WorkflowStore

    storage = host.state.get(STORAGE_STATE_KEY)
    broker = host.state.get(BROKER_STATE_KEY)
    if storage is None or broker is None:
        missing = [name for name, got in (("storage", storage), ("broker", broker)) if got is None]
        raise PluginStartError(
            "orchestration", f"tasks need the {' and '.join(missing)} plugin(s): enable them"
        )
    registry = host.collect("noa_register_task_types", Registry[Any]("task type"))
    task_types: dict[str, TaskType] = {}
    for contribution in registry.contributions():
        if not isinstance(contribution.item, TaskType):
            raise PluginStartError(
                contribution.plugin,
                f"task type {contribution.name!r} is a {type(contribution.item).__name__}, "
                "not a noa.plugin_sdk.tasks.TaskType",
            )
        task_types[contribution.name] = contribution.item
    config = host.section("orchestration", OrchestrationConfig)
    store = TaskStore(storage)
    workflow_store = WorkflowStore(storage)
    worker = Worker(config, store, broker, task_types, metrics_of(host.state))
    worker.events = Events(broker, store, workflow_store, buffer=config.events_buffer)
    await worker.events.start()
    # Before the worker starts: its first poll catches up with running workflows.
    host.state[_WORKFLOWS_KEY].start(store, workflow_store, worker)
    host.state[_SCHEDULES_KEY].start(storage, store, worker)
    await worker.start()
    host.state[_WORKER_KEY] = worker
    host.state[_TASKS_KEY].start(store, worker)


@hookimpl
async def noa_shutdown(host: Host) -> None:
    worker = host.state.pop(_WORKER_KEY, None)
    if worker is not None:
        await worker.close()
        await worker.events.close()


@hookimpl
def noa_register_grpc_services(services: Registry[Any], host: Host) -> None:
    from noa.builtin_plugins.orchestration.grpc_service import grpc_service

    services.add("orchestration", grpc_service(host.state[_TASKS_KEY], host.state[_WORKFLOWS_KEY]))
