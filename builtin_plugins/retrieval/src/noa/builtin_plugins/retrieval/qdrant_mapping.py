"""How NOA's vectors port maps onto Qdrant's models, for the Qdrant drivers: point ids
(UUID5 of the NOA id, the id kept under :data:`ID_KEY`), checked batches and vectors,
and the filter language as a Qdrant ``Filter`` (see ``qdrant_driver``'s docstring)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec
import numpy as np
from noa.builtin_plugins.retrieval.field_columns import check_payload
from noa.plugin_sdk.errors import BadRequest, Unprocessable
from noa.plugin_sdk.ports.vectors import Distance, FieldType, Point, validate_payload
from qdrant_client import models

__all__ = [
    "FLOAT_MAX",
    "ID_KEY",
    "ID_NAMESPACE",
    "INT64",
    "Schema",
    "checked_batch",
    "point_key",
    "qdrant_filter",
    "vector_of",
]

ID_KEY = "noa:id"
ID_NAMESPACE = uuid.UUID("5b0c7a4e-3f0e-4d55-9a57-6e6f612d6964")
INT64 = (-(2**63), 2**63 - 1)
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
    last: dict[str, int] = {}
    for index, point in enumerate(points):
        if not isinstance(point.id, str) or not point.id:
            raise BadRequest("a point id must be a non-empty string", param="id")
        if ID_KEY in point.payload:
            raise Unprocessable(
                f"point {point.id!r}: the payload key {ID_KEY!r} is reserved by the qdrant "
                "driver (it keeps the point's id)",
                code="reserved_payload_key",
                param="payload",
            )
        validate_payload(schema.fields, point.id, point.payload)
        check_payload(schema.fields, point.id, point.payload)
        last[point.id] = index
    kept = [points[i] for i in sorted(last.values())]
    vectors = _matrix_of(schema, kept)
    structs = []
    for point, vector in zip(kept, vectors, strict=True):
        try:
            # Through JSON, so local mode keeps what a server would (a tuple comes back a list).
            payload = msgspec.json.decode(msgspec.json.encode(point.payload))
        except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
            raise Unprocessable(
                f"point {point.id!r}: the payload can't be stored: {exc}", param="payload"
            ) from None
        payload[ID_KEY] = point.id
        structs.append(models.PointStruct(id=point_key(point.id), vector=vector, payload=payload))
    return structs


def _matrix_of(schema: Schema, points: Sequence[Point]) -> list[list[float]]:
    for point in points:
        _check_length(schema, point.vector, f"point {point.id!r}")
    try:
        values = np.array([p.vector for p in points], dtype=np.float64)
    except (TypeError, ValueError):
        for point in points:
            vector_of(schema, point.vector, f"point {point.id!r}")
        raise
    if values.shape != (len(points), schema.dim):
        raise Unprocessable("a point's vector must be a flat list of numbers", param="vector")
    finite = np.isfinite(values).all(axis=1)
    if not finite.all():
        bad = points[int(np.argmin(finite))]
        raise Unprocessable(f"point {bad.id!r} has a value that is not finite", param="vector")
    with np.errstate(over="ignore"):
        fits = np.isfinite(values.astype(np.float32)).all(axis=1)
    if not fits.all():
        bad = points[int(np.argmin(fits))]
        raise Unprocessable(f"point {bad.id!r} has a value too large for float32", param="vector")
    rows: list[list[float]] = values.tolist()
    return rows


def vector_of(schema: Schema, vector: Sequence[float], what: str) -> list[float]:
    _check_length(schema, vector, what)
    try:
        values = np.array(vector, dtype=np.float64)
    except (TypeError, ValueError):
        raise Unprocessable(f"{what} must be a list of numbers", param="vector") from None
    if values.shape != (schema.dim,):
        raise Unprocessable(f"{what} must be a flat list of numbers", param="vector")
    if not np.isfinite(values).all():
        raise Unprocessable(f"{what} has a value that is not finite", param="vector")
    with np.errstate(over="ignore"):
        if not np.isfinite(values.astype(np.float32)).all():
            raise Unprocessable(f"{what} has a value too large for float32", param="vector")
    row: list[float] = values.tolist()
    return row


def _check_length(schema: Schema, vector: Sequence[float], what: str) -> None:
    try:
        length = len(vector)
    except TypeError:
        raise Unprocessable(f"{what} must be a list of numbers", param="vector") from None
    if length != schema.dim:
        raise Unprocessable(
            f"{what} has {length} dimensions, the collection takes {schema.dim}",
            code="wrong_dimension",
            param="vector",
        )


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
            ints = sorted({n for n in map(_as_int64, values) if n is not None})
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
        number = _as_int64(value)
        if number is None:
            return None
        return models.FieldCondition(key=name, match=models.MatchValue(value=number))
    if isinstance(value, int) and abs(value) > FLOAT_MAX:
        return None  # a float field holds only float64-sized values
    bound = float(value)
    return models.FieldCondition(key=name, range=models.Range(gte=bound, lte=bound))


def _as_int64(value: int | float) -> int | None:
    """The int a number equals, when an integer field could hold it."""
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    return value if INT64[0] <= value <= INT64[1] else None


def _clamped(value: int | float) -> float:
    # Stored numbers fit a float64, so clamping a huge integer bound keeps its meaning.
    return float(max(-FLOAT_MAX, min(FLOAT_MAX, value)))
