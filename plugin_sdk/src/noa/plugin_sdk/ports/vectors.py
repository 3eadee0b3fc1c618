"""The ``vectors`` driver slot: named collections of vectors with payloads, searched
by similarity.

Drivers (``embedded``, ``qdrant-local``, ``qdrant``, ``pgvector``) register in the
entry-point group ``noa.drivers.vectors``. Scores follow Qdrant: for ``cosine`` and
``dot`` the score is the similarity and results come highest first; for ``euclid`` it is
the Euclidean distance and results come lowest first. Either way the first result is the
best match.

Errors: an unknown collection raises :class:`~noa.plugin_sdk.errors.NotFound`; a vector
of the wrong dimension or with a non-finite value raises
:class:`~noa.plugin_sdk.errors.Unprocessable`; an invalid name, distance, dimension or
``top_k`` raises :class:`~noa.plugin_sdk.errors.BadRequest`; creating a collection that
exists raises :class:`~noa.plugin_sdk.errors.Conflict`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

__all__ = [
    "COLLECTION_NAME_PATTERN",
    "Distance",
    "Point",
    "ScoredPoint",
    "VectorStorePort",
]

Distance = Literal["cosine", "dot", "euclid"]

# Names every backend can use as-is: a Qdrant collection, a PostgreSQL table suffix.
COLLECTION_NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}")


class Point(msgspec.Struct, frozen=True, kw_only=True):
    """A vector to store. ``id`` is any non-empty string; a driver whose engine wants
    other ids (Qdrant: integers or UUIDs) maps it and keeps the original."""

    id: str
    vector: Sequence[float]
    payload: dict[str, Any] = msgspec.field(default_factory=dict)


class ScoredPoint(msgspec.Struct, frozen=True, kw_only=True):
    """One search result: the point's id and payload and how well it matched."""

    id: str
    score: float
    payload: dict[str, Any] = msgspec.field(default_factory=dict)


@runtime_checkable
class VectorStorePort(Protocol):
    """A vector store holding several collections, each of one dimension and distance."""

    async def create_collection(self, name: str, dim: int, distance: Distance) -> None:
        """Create an empty collection for vectors of ``dim`` floats."""
        ...

    async def delete_collection(self, name: str) -> bool:
        """Drop a collection and its points; ``True`` if it existed."""
        ...

    async def list_collections(self) -> list[str]:
        """The names of every collection, sorted."""
        ...

    async def upsert(self, collection: str, points: Sequence[Point]) -> None:
        """Insert points, replacing vector and payload of any id already stored.

        The batch is checked before anything is written: one bad vector rejects it all.
        """
        ...

    async def search(
        self,
        collection: str,
        vector: Sequence[float],
        top_k: int,
        filter: Mapping[str, Any] | None = None,
    ) -> list[ScoredPoint]:
        """The ``top_k`` best matches for ``vector``, best first (fewer if the collection
        holds fewer). ``filter`` keeps only points whose payload has every given key
        equal to the given value."""
        ...

    async def delete(self, collection: str, ids: Sequence[str]) -> int:
        """Remove points by id; how many of them existed."""
        ...

    async def count(self, collection: str) -> int:
        """How many points the collection holds."""
        ...

    async def ping(self) -> bool:
        """``True`` when the store answers (the readiness check)."""
        ...

    async def close(self) -> None:
        """Release connections and files. Calling it again does nothing."""
        ...
