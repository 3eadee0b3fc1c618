"""Embedders: what turns texts into vectors for the retrieval plugin.

A plugin that can embed texts contributes an :class:`Embedder` through the
``noa_register_embedders(embedders, host)`` hook, under a name config and API requests use
(the inference plugin contributes ``"inference"``, serving the models of its repository;
the fastembed plugin ``"fastembed"``). A collection remembers the embedder and model it
was created with, so every text ingested into it and every query text is embedded the
same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, Protocol, runtime_checkable

__all__ = ["Embedder", "InputKind", "TokenSpans"]

InputKind = Literal["query", "document"]
"""What a text is: models trained with instructions embed queries and passages
differently; the others ignore it."""

TokenSpans = Callable[[str], Sequence[tuple[int, int]]]
"""The ``(start, end)`` character span of each token of a text, in order."""


@runtime_checkable
class Embedder(Protocol):
    """Embeds texts with the models it knows by name.

    Errors use :mod:`noa.plugin_sdk.errors`: an unknown model raises ``NotFound``, a model
    that isn't loaded (yet) ``ServiceUnavailable``, too many or too long texts
    ``PayloadTooLarge``, a full queue ``TooManyRequests``.
    """

    def default_model(self) -> str:
        """The model used when a collection names none; raises ``ServiceUnavailable``
        when there is none."""
        ...

    async def dimension(self, model: str) -> int:
        """The length of the model's vectors."""
        ...

    async def embed(
        self, model: str, texts: Sequence[str], kind: InputKind
    ) -> Sequence[Sequence[float]]:
        """One vector per text, in order (a NumPy ``float32`` matrix is fine)."""
        ...

    def token_spans(self, model: str) -> TokenSpans | None:
        """The model's tokenizer as character spans (for chunking by tokens), or
        ``None`` when it can't tell them."""
        ...
