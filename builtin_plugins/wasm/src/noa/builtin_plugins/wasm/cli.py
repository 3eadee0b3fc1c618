"""``noa wasm list``: the WASM plugins of the configured folder, loaded as a server would."""

from __future__ import annotations

import json
from typing import Any

import click
import msgspec

__all__ = ["wasm"]


@click.group("wasm")
def wasm() -> None:
    """WASM plugins ([wasm] plugin_dir)."""


@wasm.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_wasm(state: Any, as_json: bool) -> None:
    """WASM plugins with version and entries, or why one does not load."""
    from noa.builtin_plugins.wasm.config import WasmConfig
    from noa.builtin_plugins.wasm.service import WasmHost

    host = state.host()
    service = WasmHost(host.section("wasm", WasmConfig), host.server.data_dir)
    service.sandbox.start()
    try:
        rows = service.reload_sync()
    finally:
        service.sandbox.close()
        service._pool.shutdown()
    if as_json:
        click.echo(json.dumps(msgspec.to_builtins(rows), indent=2))
        return
    if not rows:
        click.echo(f"no WASM plugins in {service.plugin_dir}")
        return
    for row in rows:
        if row.state == "loaded":
            entries = ", ".join(e.name for e in row.entries)
            click.echo(f"{row.name:<32} {row.version:<10} loaded   entries: {entries}")
        else:
            click.echo(f"{row.name:<32} {'-':<10} failed   {row.error_code}: {row.error}")
