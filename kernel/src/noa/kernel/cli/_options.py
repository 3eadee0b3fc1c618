"""Options shared by every ``noa`` command, and turning kernel errors into exit codes."""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import click
from noa.kernel.config import BootOptions
from noa.kernel.runtime import Kernel
from noa.plugin_sdk.errors import ConfigError, NoaError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_CONFIG = 2
EXIT_FAILURE = 1


def parse_set(raw: str) -> tuple[str, Any]:
    """``section.key=value``; the value is read as TOML (``8080``, ``true``, ``["a"]``)
    and as a plain string when it is not valid TOML."""
    key, sep, text = raw.partition("=")
    key = key.strip()
    if not sep or not key:
        raise click.BadParameter(f"expected KEY=VALUE, got {raw!r}", param_hint="--set")
    try:
        value: Any = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    return key, value


def config_options(func: F) -> F:
    """The options that find config: profile, files, .env, ``--set``."""
    decorators = [
        click.option(
            "--profile",
            envvar=None,
            help="Config profile: embedded (default), dev, staging, prod. Env: NOA_PROFILE.",
        ),
        click.option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False),
            help="Extra TOML config file, applied after the profile's. Env: NOA_CONFIG.",
        ),
        click.option(
            "--config-dir",
            type=click.Path(file_okay=False),
            help="Folder holding default.toml and <profile>.toml [default: ./config]. "
            "Env: NOA_CONFIG_DIR.",
        ),
        click.option(
            "--env-file",
            type=click.Path(dir_okay=False),
            help="dotenv file loaded into the environment [default: ./.env]. Env: NOA_ENV_FILE.",
        ),
        click.option(
            "--set",
            "settings",
            multiple=True,
            metavar="KEY=VALUE",
            help="Set any config key, last layer (e.g. --set server.port=9000). Repeatable.",
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def boot_options(
    profile: str | None = None,
    config_file: str | None = None,
    config_dir: str | None = None,
    env_file: str | None = None,
    settings: tuple[str, ...] = (),
    flags: dict[str, Any] | None = None,
) -> BootOptions:
    overrides: list[tuple[str, Any, str]] = []
    for raw in settings:
        key, value = parse_set(raw)
        overrides.append((key, value, f"CLI --set {key}"))
    for key, (flag, value) in (flags or {}).items():
        if value is not None:
            overrides.append((key, value, f"CLI {flag}"))
    return BootOptions(
        profile=profile,
        config_file=config_file,
        config_dir=config_dir,
        env_file=env_file,
        overrides=tuple(overrides),
    )


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"noa: error: {message}", err=True)
    sys.exit(code)


@contextmanager
def kernel_errors() -> Iterator[None]:
    """One clear line and the documented exit code for what the operator must fix."""
    try:
        yield
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    except NoaError as exc:
        fail(str(exc), EXIT_FAILURE)


def boot_kernel(boot: BootOptions) -> Kernel:
    with kernel_errors():
        return Kernel.boot(boot)
    raise AssertionError("unreachable")  # pragma: no cover
