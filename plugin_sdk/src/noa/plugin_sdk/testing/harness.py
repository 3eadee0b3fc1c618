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

__all__ = ["KernelUnderTest", "boot"]


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
    from noa.kernel import BootOptions, Kernel
    from noa.kernel.asgi import build

    overrides: list[tuple[str, Any, str]] = [
        ("plugins.autoload", False, "test harness"),
        ("plugins.enable", [*plugins, *(extra_plugins or {})], "test harness"),
    ]
    _flatten("", dict(config or {}), overrides)
    with tempfile.TemporaryDirectory(prefix="noa-test-") as empty_dir:
        boot_options = BootOptions(
            profile=profile,
            config_dir=empty_dir,
            env_file=f"{empty_dir}/.env",
            overrides=tuple(o for o in overrides if o[0]),
        )
        kernel = Kernel.boot(boot_options, environ=dict(environ or {}), extra_plugins=extra_plugins)
        app = build(kernel)
        await kernel.startup()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://noa.test") as client:
                yield KernelUnderTest(kernel, app, client)
        finally:
            await kernel.shutdown()
