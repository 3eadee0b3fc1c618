"""The ``inference`` embedder: the retrieval plugin embeds through the model runtime.

Texts go through the same dynamic batcher, limits and metrics as ``/v1/embed``; a model
that is loading answers 503 and an unknown one 404, as there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from noa.builtin_plugins.inference.runtime import ModelRuntime
from noa.plugin_sdk.embedding import InputKind, TokenSpans
from numpy.typing import NDArray

__all__ = ["RuntimeEmbedder"]


class RuntimeEmbedder:
    """Serves every model of the repository (``noa models list``) by name."""

    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime = runtime

    def default_model(self) -> str:
        return self.runtime.default().name

    async def dimension(self, model: str) -> int:
        return self.runtime.get(model).dimension

    async def embed(self, model: str, texts: Sequence[str], kind: InputKind) -> NDArray[np.float32]:
        # Sentence-transformers models embed queries and passages alike.
        served = self.runtime.get(model)
        return (await served.embed(texts, truncate=True)).vectors

    def token_spans(self, model: str) -> TokenSpans | None:
        spans: TokenSpans | None = getattr(self.runtime.get(model).model, "token_spans", None)
        return spans
