"""``noa migrate``: apply, status, rollback."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

import click
import msgspec
from noa.builtin_plugins.storage.migrate import MigrationError, Migrator

__all__ = ["migrate_commands"]


def migrate_commands(make: Callable[[Any], Migrator]) -> click.Group:
    @click.group("migrate")
    def migrate() -> None:
        """Database migrations of every plugin that owns tables (piccolo)."""

    def run(state: Any, action: Callable[[Migrator], Any]) -> Any:
        try:
            return asyncio.run(action(make(state.host())))
        except MigrationError as exc:
            click.echo(f"noa: error: {exc}", err=True)
            sys.exit(1)
        except Exception as exc:  # e.g. the database cannot be reached or opened: one line
            click.echo(f"noa: error: migrate: {type(exc).__name__}: {exc}", err=True)
            sys.exit(1)

    @migrate.command("apply")
    @click.pass_obj
    def apply(state: Any) -> None:
        """Apply every pending migration, app by app in plugin order; each in a
        transaction, stopping at the first that fails (exit 1, schema unchanged)."""
        applied = run(state, lambda m: m.apply())
        if not applied:
            click.echo("nothing to apply: the schema is up to date")
        for app, ids in applied.items():
            click.echo(f"{app}: applied {', '.join(ids)}")

    @migrate.command("status")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.pass_obj
    def status(state: Any, as_json: bool) -> None:
        """Applied and pending migrations of each app; exit 3 if any is pending."""
        rows = run(state, lambda m: m.status())
        if as_json:
            click.echo(json.dumps(msgspec.to_builtins(rows), indent=2))
        else:
            for row in rows:
                click.echo(f"{row.app}: {len(row.applied)} applied, {len(row.pending)} pending")
                for ident in row.pending:
                    click.echo(f"  pending {ident}")
        if any(row.pending for row in rows):
            sys.exit(3)

    @migrate.command("rollback")
    @click.argument("app")
    @click.pass_obj
    def rollback(state: Any, app: str) -> None:
        """Reverse the latest applied migration of APP."""
        reversed_id = run(state, lambda m: m.rollback(app))
        click.echo(
            f"{app}: rolled back {reversed_id}" if reversed_id else f"{app}: nothing to roll back"
        )

    return migrate
