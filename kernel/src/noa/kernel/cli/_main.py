"""``noa``: serve, plugins, config, check, version, and commands plugins contribute."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import math
import os
import platform
import socket
import sys
from importlib.metadata import version as dist_version
from typing import Any

import click
import msgspec
from noa.kernel.asgi import BOOT_ENV
from noa.kernel.cli._options import (
    EXIT_FAILURE,
    boot_kernel,
    boot_options,
    config_options,
    kernel_errors,
)
from noa.kernel.cli._tables import render_config, render_plugins
from noa.kernel.config import BootOptions
from noa.kernel.runtime import Kernel
from noa.plugin_sdk.registry import Registry

__all__ = ["main"]


class CliState:
    """What the ``noa`` group was told; plugin commands get it with ``@click.pass_obj``."""

    def __init__(self, boot: BootOptions) -> None:
        self.boot = boot
        self._kernel: Kernel | None = None

    def host(self) -> Kernel:
        """The kernel, booted on first use with the group's config options."""
        if self._kernel is None:
            self._kernel = boot_kernel(self.boot)
        return self._kernel


def _merged_boot(ctx: click.Context, /, **kwargs: Any) -> BootOptions:
    """A command's own config options on top of the group's."""
    state = ctx.find_object(CliState)
    parent = state.boot if state is not None else BootOptions()
    own = boot_options(**kwargs)
    return BootOptions(
        profile=own.profile or parent.profile,
        config_file=own.config_file or parent.config_file,
        config_dir=own.config_dir or parent.config_dir,
        env_file=own.env_file or parent.env_file,
        overrides=parent.overrides + own.overrides,
    )


class NoaGroup(click.Group):
    """Built-in commands plus those plugins register through ``noa_register_commands``."""

    def _plugin_commands(self, ctx: click.Context, *, strict: bool) -> dict[str, click.Command]:
        """Commands plugins contribute; booting the kernel to find them may fail: with
        ``strict`` that failure is the command's (one line, exit code), else it hides
        plugin commands from a listing."""
        cached = ctx.meta.get("noa.plugin_commands")
        if cached is not None:
            return dict(cached)
        # Commands are resolved before the group's callback runs, so build the state here.
        state = ctx.find_object(CliState)
        if state is None:
            state = ctx.obj = CliState(boot_options(**ctx.params))
        try:
            kernel = state.host() if strict else Kernel.boot(state.boot)
        except Exception:
            if strict:
                raise
            return {}
        commands = kernel.collect("noa_register_commands", Registry[Any]("command"))
        cached = {
            c.name: c.item
            for c in commands.contributions()
            if isinstance(c.item, click.Command) and c.name not in self.commands
        }
        ctx.meta["noa.plugin_commands"] = cached
        return dict(cached)

    def invoke(self, ctx: click.Context) -> Any:
        # Errors from plugin commands get the same one line and exit code as ours.
        with kernel_errors():
            return super().invoke(ctx)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._plugin_commands(ctx, strict=False)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        builtin = super().get_command(ctx, cmd_name)
        if builtin is not None:
            return builtin
        with kernel_errors():
            return self._plugin_commands(ctx, strict=True).get(cmd_name)


@click.group(cls=NoaGroup, context_settings={"help_option_names": ["-h", "--help"]})
@config_options
@click.pass_context
def main(ctx: click.Context, /, **kwargs: Any) -> None:
    """NOA Unified Server: one server for APIs, tasks, inference, retrieval and plugins.

    Config layers, later wins: built-in defaults, the packaged profile,
    <config-dir>/default.toml, <config-dir>/<profile>.toml, --config FILE, the
    environment (NOA_SECTION__KEY, .env loaded), CLI flags. Exit codes: 0 ok,
    1 failure (a plugin or driver named), 2 invalid config (key, value and layer named).
    """
    if ctx.obj is None:
        ctx.obj = CliState(boot_options(**kwargs))


@main.command()
@config_options
@click.option("--host", help="Address to bind [config server.host, default 127.0.0.1].")
@click.option("--port", type=int, help="Port to bind [config server.port, default 8080].")
@click.option("--workers", type=int, help="Worker processes [config server.workers, default 1].")
@click.option(
    "--ssl-certificate",
    type=click.Path(dir_okay=False),
    help="TLS certificate (PEM) [config server.ssl_certificate].",
)
@click.option(
    "--ssl-keyfile",
    type=click.Path(dir_okay=False),
    help="TLS private key (PEM, PKCS#8) [config server.ssl_keyfile].",
)
@click.pass_context
def serve(
    ctx: click.Context,
    /,
    host: str | None,
    port: int | None,
    workers: int | None,
    ssl_certificate: str | None,
    ssl_keyfile: str | None,
    **kwargs: Any,
) -> None:
    """Serve HTTP with granian until SIGTERM or SIGINT, then drain and exit 0."""
    from granian import Granian
    from granian.constants import Interfaces

    flags = {
        "server.host": ("--host", host),
        "server.port": ("--port", port),
        "server.workers": ("--workers", workers),
        "server.ssl_certificate": ("--ssl-certificate", ssl_certificate),
        "server.ssl_keyfile": ("--ssl-keyfile", ssl_keyfile),
    }
    boot = _merged_boot(ctx, flags=flags, **kwargs)
    kernel = boot_kernel(boot)
    if not kernel.pm.hook.noa_asgi_app.get_hookimpls():
        click.echo(
            "noa: error: no enabled plugin builds the HTTP app: enable the 'http' plugin", err=True
        )
        sys.exit(EXIT_FAILURE)
    server = kernel.server
    if bool(server.ssl_certificate) != bool(server.ssl_keyfile):
        click.echo(
            "noa: error: TLS needs both server.ssl_certificate and server.ssl_keyfile", err=True
        )
        sys.exit(2)
    for key, path in (
        ("ssl_certificate", server.ssl_certificate),
        ("ssl_keyfile", server.ssl_keyfile),
    ):
        if path and not os.path.isfile(path):
            click.echo(
                f"noa: error: config key 'server.{key}' = {path!r}: file not found", err=True
            )
            sys.exit(2)
    busy = _port_in_use(server.host, server.port)
    if busy:
        click.echo(f"noa: error: cannot listen on {server.host}:{server.port}: {busy}", err=True)
        sys.exit(EXIT_FAILURE)
    # Last, once everything that can be checked cheaply is right (it may migrate).
    with kernel_errors():
        kernel.call_each("noa_before_serve", host=kernel)
    os.environ[BOOT_ENV] = msgspec.json.encode(boot).decode()
    scheme = "https" if server.ssl_certificate else "http"
    message = (
        f"serving profile {kernel.profile!r} on {scheme}://{server.host}:{server.port} "
        f"with {server.workers} worker(s)"
    )
    if logging.getLogger().handlers:
        logging.getLogger("noa.kernel").info(message)
    else:
        click.echo(f"noa: {message}", err=True)
    Granian(
        "noa.kernel.asgi:create_app",
        factory=True,
        interface=Interfaces.ASGI,
        address=server.host,
        port=server.port,
        workers=server.workers,
        ssl_cert=_path(server.ssl_certificate),
        ssl_key=_path(server.ssl_keyfile),
        workers_kill_timeout=math.ceil(server.shutdown_grace_s),
        log_access=False,
        log_dictconfig=_granian_logging(),
    ).serve()


def _port_in_use(host: str, port: int) -> str | None:
    """Why host:port cannot be bound, or None. granian binds with SO_REUSEPORT, so a
    second server on a taken port would silently share it: refuse instead."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "the port is already in use (is another server running?)"
            return exc.strerror or str(exc)
    return None


def _granian_logging() -> dict[str, Any] | None:
    """Send granian's own records to the root logger when a plugin has configured one
    (observability renders them like every other line); else keep granian's format."""
    if not logging.getLogger().handlers:
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {"_granian": {"handlers": [], "propagate": True}},
    }


def _path(value: str | None) -> Any:
    from pathlib import Path

    return Path(value) if value else None


@main.group()
def plugins() -> None:
    """Inspect installed plugins."""


@plugins.command("list")
@config_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def plugins_list(ctx: click.Context, /, as_json: bool, **kwargs: Any) -> None:
    """Every discovered plugin: name, kind, version, distribution, hooks, enabled, state,
    error; then the guest plugins that plugins host (kind "wasm" ...), as declared.

    An optional plugin that failed to load is listed with its error; a required one
    that fails stops the command with exit code 1. A guest that fails to load is listed
    with its error and never stops anything.
    """
    kernel = boot_kernel(_merged_boot(ctx, **kwargs))
    rows = kernel.plugins()
    if as_json:
        click.echo(json.dumps(msgspec.to_builtins(rows), indent=2))
    else:
        click.echo(render_plugins(rows))


@plugins.command("new")
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    help="Where to write it [default: ./noa-plugin-NAME].",
)
def plugins_new(name: str, directory: str | None) -> None:
    """Write a new plugin package NAME from the SDK's template, ready to pip install.

    It has an entry point, a config section, a route and tests (the plugin contract
    and a route test) that run against a real kernel.
    """
    from pathlib import Path

    from noa.plugin_sdk.template import render

    target = Path(directory or f"noa-plugin-{name.replace('_', '-')}")
    try:
        written = render(name, target)
    except (ValueError, FileExistsError) as exc:
        click.echo(f"noa: error: {exc}", err=True)
        sys.exit(2)
    for path in written:
        click.echo(f"  wrote {path}")
    click.echo(f"next: pip install -e '{target}[test]' && noa plugins list && pytest {target}")


@main.group("config")
def config_group() -> None:
    """Inspect the effective configuration."""


@config_group.command("show")
@config_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON (values and sources).")
@click.pass_context
def config_show(ctx: click.Context, /, as_json: bool, **kwargs: Any) -> None:
    """The effective config, each key with the layer it came from; secrets masked."""
    kernel = boot_kernel(_merged_boot(ctx, **kwargs))
    effective = kernel.effective_config()
    if as_json:
        click.echo(json.dumps(effective, indent=2, default=str))
    else:
        click.echo(render_config(effective))


@main.command()
@config_options
@click.option("--json", "as_json", is_flag=True, help="Print the readiness report as JSON.")
@click.pass_context
def check(ctx: click.Context, /, as_json: bool, **kwargs: Any) -> None:
    """Start every plugin, run the readiness checks once, stop. Exit 1 unless ready."""
    kernel = boot_kernel(_merged_boot(ctx, **kwargs))

    async def run() -> Any:
        await kernel.startup()
        try:
            return await kernel.readiness()
        finally:
            await kernel.shutdown()

    with kernel_errors():
        report = asyncio.run(run())
    if as_json:
        click.echo(json.dumps(msgspec.to_builtins(report), indent=2))
    else:
        for c in report.components:
            mark = {"ok": "ok  ", "degraded": "WARN", "failing": "FAIL"}[c.status]
            detail = f"  {c.detail}" if c.detail else ""
            click.echo(f"{mark}  {c.name} ({c.plugin}, {c.duration_ms:.1f} ms){detail}")
        click.echo(f"status: {report.status}")
    if not report.ready:
        sys.exit(EXIT_FAILURE)


@main.command()
def version() -> None:
    """Print the versions of NOA, Python and the core libraries."""
    click.echo(f"noa-kernel {dist_version('noa-kernel')}")
    click.echo(f"python {platform.python_version()}")
    for dist in ("noa-plugin-sdk", "granian", "pluggy", "stevedore", "msgspec"):
        try:
            click.echo(f"{dist} {dist_version(dist)}")
        except Exception:
            continue
