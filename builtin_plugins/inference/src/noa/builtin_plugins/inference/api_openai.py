"""OpenAI-compatible ``/v1/embeddings`` and ``/v1/models`` (being written)."""

from __future__ import annotations

from litestar.handlers import HTTPRouteHandler
from noa.builtin_plugins.inference.runtime import ModelRuntime


def openai_handlers(runtime: ModelRuntime) -> list[HTTPRouteHandler]:
    return []
