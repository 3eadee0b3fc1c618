"""``MemoryVectorStore``: the reference :class:`~noa.plugin_sdk.ports.VectorStorePort`.

Exact brute-force search in pure Python: every query scores every point that passes the
filter (:func:`~noa.plugin_sdk.ports.vectors.matches`, the reference meaning), so its
results are the ground truth an approximate index is measured against. Fine for tests
and some thousands of points; nothing is persisted.
"""

from __future__ import annotations

import heapq
import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

from noa.plugin_sdk.errors import BadRequest, Conflict, NotFound, Unprocessable
from noa.plugin_sdk.ports.vectors import (
    CollectionInfo,
    Distance,
    FieldType,
    Point,
    ScoredPoint,
    matches,
    validate_collection,
    validate_filter,
    validate_payload,
)

__all__ = ["MemoryVectorStore"]


class _Collection:
    __slots__ = ("dim", "distance", "fields", "points")

    def __init__(self, dim: int, distance: Distance, fields: dict[str, FieldType]) -> None:
        self.dim = dim
        self.distance = distance
        self.fields = fields
        # id -> (vector as stored, payload); cosine vectors are stored normalised.
        self.points: dict[str, tuple[tuple[float, ...], dict[str, Any]]] = {}


class MemoryVectorStore:
    """Collections of vectors in dicts, searched exactly."""

    def __init__(self) -> None:
        self._collections: dict[str, _Collection] = {}

    async def create_collection(
        self,
        name: str,
        dim: int,
        distance: Distance,
        fields: Mapping[str, FieldType] | None = None,
    ) -> None:
        declared = validate_collection(name, dim, distance, fields)
        if name in self._collections:
            raise Conflict(f"collection {name!r} already exists", code="collection_exists")
        self._collections[name] = _Collection(dim, distance, declared)

    async def collection_info(self, name: str) -> CollectionInfo:
        found = self._get(name)
        return CollectionInfo(
            name=name,
            dim=found.dim,
            distance=found.distance,
            fields=dict(found.fields),
            count=len(found.points),
        )

    async def delete_collection(self, name: str) -> bool:
        return self._collections.pop(name, None) is not None

    async def list_collections(self) -> list[str]:
        return sorted(self._collections)

    async def upsert(self, collection: str, points: Sequence[Point]) -> None:
        found = self._get(collection)
        checked: list[tuple[str, tuple[float, ...], dict[str, Any]]] = []
        for point in points:
            if not point.id:
                raise BadRequest("a point id must be a non-empty string", param="id")
            vector = _prepare(found, point.vector, f"point {point.id!r}")
            validate_payload(found.fields, point.id, point.payload)
            checked.append((point.id, vector, dict(point.payload)))
        for point_id, vector, payload in checked:
            found.points[point_id] = (vector, payload)

    async def search(
        self,
        collection: str,
        vector: Sequence[float],
        top_k: int,
        filter: Mapping[str, Any] | None = None,
    ) -> list[ScoredPoint]:
        found = self._get(collection)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise BadRequest(f"top_k must be a positive integer, got {top_k!r}", param="top_k")
        query = _prepare(found, vector, "the query vector")
        validate_filter(found.fields, filter)
        wanted = list((filter or {}).items())
        scored = [
            (_score(found.distance, query, stored), point_id, payload)
            for point_id, (stored, payload) in found.points.items()
            if all(k in payload and matches(condition, payload[k]) for k, condition in wanted)
        ]
        if found.distance == "euclid":
            best = heapq.nsmallest(top_k, scored, key=lambda item: item[0])
        else:
            best = heapq.nlargest(top_k, scored, key=lambda item: item[0])
        return [ScoredPoint(id=i, score=s, payload=dict(p)) for s, i, p in best]

    async def delete(self, collection: str, ids: Sequence[str]) -> int:
        points = self._get(collection).points
        return sum(points.pop(point_id, None) is not None for point_id in set(ids))

    async def count(self, collection: str) -> int:
        return len(self._get(collection).points)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._collections.clear()

    def _get(self, name: str) -> _Collection:
        try:
            return self._collections[name]
        except KeyError:
            raise NotFound(f"no collection named {name!r}", code="collection_not_found") from None


def _prepare(collection: _Collection, vector: Sequence[float], what: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in vector)
    if len(values) != collection.dim:
        raise Unprocessable(
            f"{what} has {len(values)} dimensions, the collection takes {collection.dim}",
            code="wrong_dimension",
            param="vector",
        )
    if not all(math.isfinite(v) for v in values):
        raise Unprocessable(f"{what} has a value that is not finite", param="vector")
    if collection.distance == "cosine":
        norm = math.sqrt(math.fsum(v * v for v in values))
        if norm > 0:
            values = tuple(v / norm for v in values)
    return values


def _score(distance: Distance, a: tuple[float, ...], b: tuple[float, ...]) -> float:
    if distance == "euclid":
        return math.dist(a, b)
    # cosine vectors are normalised on the way in, so their similarity is a dot product.
    return math.fsum(map(operator.mul, a, b))
