"""Boot a real kernel in-process with only the plugins named, and talk to it over HTTP.

Nothing is mocked: plugins load through their entry points (or are passed as objects),
config goes through the same layers as ``noa serve``, requests go through the same ASGI
app. The process environment and the working directory's ``config/`` and ``.env`` are
ignored unless passed in, so a test sees only what it sets.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx

__all__ = ["KernelUnderTest", "boot", "boot_kernel"]


def _flatten(prefix: str, value: Any, out: list[tuple[str, Any, str]]) -> None:
    if isinstance(value, Mapping) and not (len(value) == 1 and set(value) <= {"env", "file"}):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out.append((prefix, value, f"test config {prefix}"))


class KernelUnderTest:
    """A started kernel, its ASGI app and an HTTP client bound to it."""

    def __init__(self, kernel: Any, app: Any, client: httpx.AsyncClient) -> None:
        self.kernel = kernel
        self.app = app
        self.client = client


def boot_kernel(
    plugins: Sequence[str] = ("http",),
    *,
    config: Mapping[str, Any] | None = None,
    extra_plugins: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
    profile: str = "embedded",
) -> Any:
    """A booted (not started) kernel with only ``plugins``; see :func:`boot`."""
    from noa.kernel import BootOptions, Kernel

    overrides: list[tuple[str, Any, str]] = [
        ("plugins.autoload", False, "test harness"),
        ("plugins.enable", list(plugins), "test harness"),
    ]
    _flatten("", dict(config or {}), overrides)
    with tempfile.TemporaryDirectory(prefix="noa-test-") as empty_dir:
        options = BootOptions(
            profile=profile,
            config_dir=empty_dir,
            overrides=tuple(o for o in overrides if o[0]),
        )
        return Kernel.boot(options, environ=dict(environ or {}), extra_plugins=extra_plugins)


@asynccontextmanager
async def boot(
    plugins: Sequence[str] = ("http",),
    *,
    config: Mapping[str, Any] | None = None,
    extra_plugins: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
    profile: str = "embedded",
) -> AsyncIterator[KernelUnderTest]:
    """Start a kernel with only ``plugins`` (installed names) plus ``extra_plugins``.

    ``config`` is a nested mapping applied as the last layer (``{"http": {"max_in_flight": 2}}``).
    Shuts the kernel down on exit.
    """
    from noa.kernel.asgi import build

    kernel = boot_kernel(
        plugins, config=config, extra_plugins=extra_plugins, environ=environ, profile=profile
    )
    app = build(kernel)
    await kernel.startup()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://noa.test") as client:
            yield KernelUnderTest(kernel, app, client)
    finally:
        await kernel.shutdown()
