"""``noa tasks``: list, show, cancel and re-queue dead tasks.

They work on the configured database directly, like ``noa migrate``, so they work with
every server down: a cancelled running task is stopped by its worker at its next poll,
a re-queued one is dispatched by the next worker poll (or at the next start). With the
``nats`` broker each change is also published as a progress event; with ``inprocess``
there is nobody in this process to tell.

Exit codes: 0 done, 1 failed (no such task, a task in the wrong state, the database
unreachable or not migrated), 2 invalid config or usage.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import click
import msgspec
from noa.builtin_plugins.orchestration.events import TaskEventName, task_event, task_subject
from noa.builtin_plugins.orchestration.service import MAX_LIST
from noa.builtin_plugins.orchestration.store import TaskStore, view_of
from noa.builtin_plugins.orchestration.values import STATES, TaskView
from noa.plugin_sdk import Host, PluginConfig
from noa.plugin_sdk.errors import NoaError
from noa.plugin_sdk.ports.broker import BROKER_STATE_KEY
from noa.plugin_sdk.ports.storage import STORAGE_STATE_KEY
from noa.plugin_sdk.slot_driver import close_driver, start_driver

__all__ = ["tasks"]

T = TypeVar("T")


def _fail(message: str) -> NoReturn:
    click.echo(f"noa: error: {message}", err=True)
    sys.exit(1)


def _when(moment: float | None) -> str:
    if not moment:
        return "-"
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Session:
    """The task table (and, with a networked broker, the event subjects) of one command."""

    __slots__ = ("host", "store")

    def __init__(self, host: Host) -> None:
        self.host = host
        self.store = TaskStore(host.state[STORAGE_STATE_KEY])

    async def changed(self, task_id: str, event: TaskEventName) -> TaskView:
        row = await self.store.get(task_id)
        assert row is not None
        broker = self.host.state.get(BROKER_STATE_KEY)
        if broker is not None:
            try:
                payload = msgspec.json.encode(task_event(row, event))
                await broker.publish(task_subject(task_id), payload)
            except Exception as exc:  # the change stands; only its event is lost
                click.echo(f"noa: warning: event not published ({exc})", err=True)
        return view_of(row)


def _run(state: Any, work: Callable[[_Session], Awaitable[T]], *, events: bool = False) -> T:
    """Run ``work`` on the configured storage; a failure is one ``noa: error:`` line."""
    host: Host = state.host()
    try:
        storage = host.section("storage", PluginConfig)
    except KeyError:
        _fail("`noa tasks` needs the 'storage' plugin: enable it (plugins.enable)")

    async def main() -> T:
        try:
            await start_driver(
                host,
                "storage",
                STORAGE_STATE_KEY,
                build=lambda cls: cls.from_config(storage, host.server.data_dir),
                url_key="storage.postgres_url",
            )
            if events and _networked_broker(host):
                broker = host.section("broker", PluginConfig)
                await start_driver(
                    host,
                    "broker",
                    BROKER_STATE_KEY,
                    build=lambda cls: cls.from_config(broker),
                    url_key="broker.nats_url",
                )
            return await work(_Session(host))
        finally:
            await close_driver(host, BROKER_STATE_KEY)
            await close_driver(host, STORAGE_STATE_KEY)

    try:
        return asyncio.run(main())
    except NoaError:
        raise  # the kernel's one line and exit code (2 for invalid config)
    except Exception as exc:
        text = str(exc)
        hint = "; run `noa migrate apply` first" if "noa_orchestration" in text else ""
        _fail(f"{type(exc).__name__}: {text}{hint}")


def _networked_broker(host: Host) -> bool:
    try:
        return str(host.config_value("drivers.broker")) != "inprocess"
    except KeyError:
        return False


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(msgspec.to_builtins(value), indent=2))


@click.group("tasks")
def tasks() -> None:
    """Durable tasks in the database: inspect, cancel, re-queue dead letters."""


@tasks.command("list")
@click.option("--state", "task_state", type=click.Choice(STATES), help="Only tasks in this state.")
@click.option("--type", "task_type", help="Only tasks of this type.")
@click.option(
    "--limit", type=click.IntRange(1, MAX_LIST), default=50, show_default=True, help="At most."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_tasks(
    state: Any, task_state: str | None, task_type: str | None, limit: int, as_json: bool
) -> None:
    """The newest tasks first."""
    found = _run(state, lambda s: s.store.find(state=task_state, type=task_type, limit=limit))
    if as_json:
        _echo_json(found)
        return
    if not found:
        click.echo("no tasks")
        return
    click.echo(f"{'ID':<32}  {'STATE':<9} {'TYPE':<20} {'TRIES':>5}  {'CREATED':<20}  ERROR")
    for task in found:
        error = task.error.code if task.error else "-"
        click.echo(
            f"{task.id:<32}  {task.state:<9} {task.type[:20]:<20} {task.attempts:>5}  "
            f"{_when(task.created_at):<20}  {error}"
        )


@tasks.command("show")
@click.argument("task_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def show(state: Any, task_id: str, as_json: bool) -> None:
    """One task: state, attempts, input, output and last error."""
    row = _run(state, lambda s: s.store.get(task_id))
    if row is None:
        _fail(f"no task {task_id!r} (see `noa tasks list`)")
    task = view_of(row)
    if as_json:
        _echo_json(task)
        return
    lines = [
        ("id", task.id),
        ("type", task.type),
        ("state", task.state),
        ("attempts", f"{task.attempts} (retries allowed: {task.max_retries})"),
        ("priority", str(task.priority)),
        ("created", _when(task.created_at)),
        ("started", _when(task.started_at)),
        ("finished", _when(task.finished_at)),
        ("run at", _when(task.run_at)),
    ]
    if row.get("workflow_id"):
        lines.append(("workflow", f"{row['workflow_id']} (step {row['step_id']})"))
    if task.error is not None:
        lines.append(("error", f"{task.error.code}: {task.error.message}"))
    lines.append(("input", json.dumps(task.input)))
    if task.output is not None:
        lines.append(("output", json.dumps(task.output)))
    for label, value in lines:
        click.echo(f"{label + ':':<10}{value}")


@tasks.command("cancel")
@click.argument("task_id", metavar="ID")
@click.pass_obj
def cancel(state: Any, task_id: str) -> None:
    """Cancel a queued task, or stop a running one (its worker stops it at its next poll)."""

    async def work(session: _Session) -> TaskView | str:
        if await session.store.cancel(task_id):
            return await session.changed(task_id, "cancelled")
        row = await session.store.get(task_id)
        return "missing" if row is None else str(row["state"])

    outcome = _run(state, work, events=True)
    if outcome == "missing":
        _fail(f"no task {task_id!r} (see `noa tasks list`)")
    if isinstance(outcome, str):
        _fail(f"task {task_id} is {outcome}: only a queued or running task can be cancelled")
    click.echo(f"cancelled task {task_id} ({outcome.type})")


@tasks.command("retry-dead")
@click.argument("task_id", metavar="[ID]", required=False)
@click.option("--all", "every", is_flag=True, help="Every dead task (of --type, if given).")
@click.option("--type", "task_type", help="With --all: only dead tasks of this type.")
@click.pass_obj
def retry_dead(state: Any, task_id: str | None, every: bool, task_type: str | None) -> None:
    """Queue a dead task (ID) or every dead one (--all) again, attempts reset."""
    if (task_id is None) == (not every):
        raise click.UsageError("give a task ID or --all (not both)")
    if task_type is not None and not every:
        raise click.UsageError("--type goes with --all")

    async def work(session: _Session) -> list[str] | str:
        if task_id is not None:
            if await session.store.requeue_dead(task_id):
                await session.changed(task_id, "requeued")
                return [task_id]
            row = await session.store.get(task_id)
            return "missing" if row is None else str(row["state"])
        queued: list[str] = []
        while True:  # in batches: requeued tasks leave the dead list (once: one that
            # died again meanwhile is not taken twice)
            dead = await session.store.find(state="dead", type=task_type, limit=MAX_LIST)
            fresh = [task for task in dead if task.id not in queued]
            if not fresh:
                return queued
            for task in fresh:
                if await session.store.requeue_dead(task.id):
                    await session.changed(task.id, "requeued")
                    queued.append(task.id)

    outcome = _run(state, work, events=True)
    if outcome == "missing":
        _fail(f"no task {task_id!r} (see `noa tasks list --state dead`)")
    if isinstance(outcome, str):
        _fail(f"task {task_id} is {outcome}: only a dead task can be queued again")
    if task_id is not None:
        click.echo(f"queued task {task_id} again")
    else:
        click.echo(f"queued {len(outcome)} dead task(s) again")
