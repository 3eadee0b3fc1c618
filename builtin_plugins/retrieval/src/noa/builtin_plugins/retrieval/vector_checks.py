"""Checks of what a vectors driver is handed, shared by every driver of this plugin
(embedded, Qdrant, PostgreSQL): point ids and payloads against a collection's declared
fields, vectors of the right length with finite values that fit a float32, and payloads
that can be written as JSON.

Every check runs on the whole batch before anything is written, and its error names the
first bad point, so a rejected batch leaves the collection as it was.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np
from noa.builtin_plugins.retrieval.field_columns import check_payload
from noa.plugin_sdk.errors import BadRequest, Unprocessable
from noa.plugin_sdk.ports.vectors import FieldType, Point, validate_payload
from numpy.typing import NDArray

__all__ = ["checked_points", "encoded_payload", "matrix_of", "vector_of"]


def checked_points(fields: Mapping[str, FieldType], points: Sequence[Point]) -> list[Point]:
    """The batch with each id and payload checked (the port's :func:`validate_payload`,
    then what a typed column can hold); of a repeated id the last point wins."""
    last: dict[str, int] = {}
    for index, point in enumerate(points):
        if not isinstance(point.id, str) or not point.id:
            raise BadRequest("a point id must be a non-empty string", param="id")
        validate_payload(fields, point.id, point.payload)
        check_payload(fields, point.id, point.payload)
        last[point.id] = index
    return [points[i] for i in sorted(last.values())]


def encoded_payload(point: Point) -> bytes:
    """The point's payload as JSON, or ``Unprocessable`` naming the point."""
    try:
        return msgspec.json.encode(point.payload)
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
        raise Unprocessable(
            f"point {point.id!r}: the payload can't be stored: {exc}", param="payload"
        ) from None


def matrix_of(dim: int, points: Sequence[Point], *, normalise: bool = False) -> NDArray[np.float64]:
    """The points' vectors as rows of float64 (``normalise``: scaled to length 1, a zero
    vector left as it is), or the error naming the first bad point."""
    for point in points:
        _check_length(dim, point.vector, f"point {point.id!r}")
    try:
        values = np.array([p.vector for p in points], dtype=np.float64)
    except (TypeError, ValueError):
        for point in points:
            vector_of(dim, point.vector, f"point {point.id!r}")
        raise
    if values.shape != (len(points), dim):
        raise Unprocessable("a point's vector must be a flat list of numbers", param="vector")
    finite = np.isfinite(values).all(axis=1)
    if not finite.all():
        bad = points[int(np.argmin(finite))]
        raise Unprocessable(f"point {bad.id!r} has a value that is not finite", param="vector")
    fits = np.isfinite(_float32(values)).all(axis=1)
    if not fits.all():
        bad = points[int(np.argmin(fits))]
        raise Unprocessable(f"point {bad.id!r} has a value too large for float32", param="vector")
    if normalise and len(values):
        norms = np.sqrt(np.einsum("ij,ij->i", values, values))
        norms[norms == 0] = 1.0
        values /= norms[:, None]
    return values


def vector_of(
    dim: int, vector: Sequence[float], what: str, *, normalise: bool = False
) -> NDArray[np.float64]:
    """One vector as float64 (``normalise``: scaled to length 1), checked; ``what`` names
    it in errors."""
    _check_length(dim, vector, what)
    try:
        values = np.array(vector, dtype=np.float64)
    except (TypeError, ValueError):
        raise Unprocessable(f"{what} must be a list of numbers", param="vector") from None
    if values.shape != (dim,):
        raise Unprocessable(f"{what} must be a flat list of numbers", param="vector")
    if not np.isfinite(values).all():
        raise Unprocessable(f"{what} has a value that is not finite", param="vector")
    if not np.isfinite(_float32(values)).all():
        raise Unprocessable(f"{what} has a value too large for float32", param="vector")
    if normalise:
        norm = math.sqrt(float(values @ values))
        if norm > 0:
            values /= norm
    return values


def _check_length(dim: int, vector: Any, what: str) -> None:
    try:
        length = len(vector)
    except TypeError:
        raise Unprocessable(f"{what} must be a list of numbers", param="vector") from None
    if length != dim:
        raise Unprocessable(
            f"{what} has {length} dimensions, the collection takes {dim}",
            code="wrong_dimension",
            param="vector",
        )


def _float32(values: NDArray[np.float64]) -> NDArray[np.float32]:
    with np.errstate(over="ignore"):
        return values.astype(np.float32)
