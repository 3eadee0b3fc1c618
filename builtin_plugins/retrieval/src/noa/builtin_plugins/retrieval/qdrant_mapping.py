"""How NOA's vectors port maps onto Qdrant's models, for the Qdrant drivers: point ids
(UUID5 of the NOA id, the id kept under :data:`ID_KEY`), checked batches and vectors,
and the filter language as a Qdrant ``Filter`` (see ``qdrant_driver``'s docstring)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec
from noa.builtin_plugins.retrieval.vector_checks import (
    checked_points,
    encoded_payload,
    matrix_of,
)
from noa.builtin_plugins.retrieval.vector_checks import vector_of as checked_vector
from noa.plugin_sdk.errors import Unprocessable
from noa.plugin_sdk.ports.vectors import Distance, FieldType, Point, as_int64
from qdrant_client import models

__all__ = [
    "FLOAT_MAX",
    "ID_KEY",
    "ID_NAMESPACE",
    "Schema",
    "checked_batch",
    "point_key",
    "qdrant_filter",
    "vector_of",
]

ID_KEY = "noa:id"
ID_NAMESPACE = uuid.UUID("5b0c7a4e-3f0e-4d55-9a57-6e6f612d6964")
FLOAT_MAX = 1.7976931348623157e308


class Schema:
    __slots__ = ("dim", "distance", "fields")

    def __init__(self, dim: int, distance: Distance, fields: dict[str, FieldType]) -> None:
        self.dim = dim
        self.distance = distance
        self.fields = fields


def point_key(point_id: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, point_id))


def checked_batch(schema: Schema, points: Sequence[Point]) -> list[models.PointStruct]:
    """The batch as Qdrant points (the last of a repeated id wins), or the error naming
    its first bad point. Nothing is sent before the whole batch passes."""
    for point in points:
        if ID_KEY in point.payload:
            raise Unprocessable(
                f"point {point.id!r}: the payload key {ID_KEY!r} is reserved by the qdrant "
                "driver (it keeps the point's id)",
                code="reserved_payload_key",
                param="payload",
            )
    kept = checked_points(schema.fields, points)
    vectors: list[list[float]] = matrix_of(schema.dim, kept).tolist()
    structs = []
    for point, vector in zip(kept, vectors, strict=True):
        # Through JSON, so local mode keeps what a server would (a tuple comes back a list).
        payload = msgspec.json.decode(encoded_payload(point))
        payload[ID_KEY] = point.id
        structs.append(models.PointStruct(id=point_key(point.id), vector=vector, payload=payload))
    return structs


def vector_of(schema: Schema, vector: Sequence[float], what: str) -> list[float]:
    row: list[float] = checked_vector(schema.dim, vector, what).tolist()
    return row


# -- filters ----------------------------------------------------------------------------------

_Condition = models.FieldCondition | models.Filter


def qdrant_filter(
    fields: Mapping[str, FieldType], where: Mapping[str, Any]
) -> models.Filter | Literal[False]:
    """A filter that passed :func:`validate_filter` as Qdrant's, or ``False`` when one
    condition can't hold for any value its field may store."""
    must: list[Any] = []
    for name, condition in where.items():
        translated = _condition(name, fields[name], condition)
        if translated is None:
            return False
        must.append(translated)
    return models.Filter(must=must)


def _condition(name: str, kind: FieldType, condition: Any) -> _Condition | None:
    if not isinstance(condition, Mapping):
        return _equals(name, kind, condition)
    if "any" in condition:
        values = list(condition["any"])
        if kind == "keyword":
            return models.FieldCondition(key=name, match=models.MatchAny(any=values))
        if kind == "integer":
            ints = sorted({n for n in map(as_int64, values) if n is not None})
            if not ints:
                return None
            return models.FieldCondition(key=name, match=models.MatchAny(any=ints))
        options: list[models.Condition] = [
            c for c in (_equals(name, kind, v) for v in values) if c is not None
        ]
        if not options:
            return None
        return models.Filter(should=options)
    bounds = {op: _clamped(value) for op, value in condition.items()}
    return models.FieldCondition(key=name, range=models.Range(**bounds))


def _equals(name: str, kind: FieldType, value: Any) -> models.FieldCondition | None:
    if kind in ("keyword", "bool"):
        return models.FieldCondition(key=name, match=models.MatchValue(value=value))
    if kind == "integer":
        number = as_int64(value)
        if number is None:
            return None
        return models.FieldCondition(key=name, match=models.MatchValue(value=number))
    if isinstance(value, int) and abs(value) > FLOAT_MAX:
        return None  # a float field holds only float64-sized values
    bound = float(value)
    return models.FieldCondition(key=name, range=models.Range(gte=bound, lte=bound))


def _clamped(value: int | float) -> float:
    # Stored numbers fit a float64, so clamping a huge integer bound keeps its meaning.
    return float(max(-FLOAT_MAX, min(FLOAT_MAX, value)))
