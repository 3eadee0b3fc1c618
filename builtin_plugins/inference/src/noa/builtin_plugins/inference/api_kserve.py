"""KServe v2 / Open Inference Protocol REST routes under ``/v2`` (being written)."""

from __future__ import annotations

from litestar import Router
from noa.builtin_plugins.inference.runtime import ModelRuntime


def kserve_router(runtime: ModelRuntime) -> Router:
    return Router(path="/v2", route_handlers=[])
