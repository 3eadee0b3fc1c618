"""The ASGI entry point granian loads in every worker, and the lifespan around the app.

``noa serve`` validates config and plugins in the parent process, then hands the boot
options to workers through the ``NOA_BOOT`` environment variable; each worker boots its
own kernel through :func:`create_app` (granian's factory mode).
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

import msgspec
from noa.kernel.config import BootOptions
from noa.kernel.runtime import Kernel
from noa.plugin_sdk.transport import ASGIApp, Receive, Scope, Send

__all__ = ["BOOT_ENV", "LifespanApp", "create_app"]

BOOT_ENV = "NOA_BOOT"


class LifespanApp:
    """Runs the kernel's startup and shutdown on ASGI lifespan events; passes the rest on."""

    __slots__ = ("app", "kernel")

    def __init__(self, kernel: Kernel, app: ASGIApp) -> None:
        self.kernel = kernel
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.kernel.startup()
                except Exception as exc:
                    print(f"noa: error: {exc}", file=sys.stderr, flush=True)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                # Everything built so far lives as long as the worker: move it out of the
                # garbage collector's sight so collections scan only per-request objects.
                gc.collect()
                gc.freeze()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.kernel.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def build(kernel: Kernel) -> LifespanApp:
    return LifespanApp(kernel, kernel.asgi_app())


def create_app() -> Any:
    """granian factory: boot a kernel from ``NOA_BOOT`` and return its app."""
    raw = os.environ.get(BOOT_ENV)
    boot = msgspec.json.decode(raw, type=BootOptions) if raw else BootOptions()
    return build(Kernel.boot(boot))
