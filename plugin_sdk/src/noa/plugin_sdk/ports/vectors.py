"""The ``vectors`` driver slot: named collections of vectors with payloads, searched
by similarity.

Drivers (``embedded``, ``qdrant-local``, ``qdrant``, ``pgvector``) register in the
entry-point group ``noa.drivers.vectors``. Scores follow Qdrant: for ``cosine`` and
``dot`` the score is the similarity and results come highest first; for ``euclid`` it is
the Euclidean distance and results come lowest first. Either way the first result is the
best match.

A collection declares the payload **fields** it can be filtered on, each with a
:data:`FieldType`; other payload keys are stored and returned but not filterable. A
filter maps declared field names to conditions, all of which must hold:

=================================== ==============================================
condition                           keeps a point whose field value ...
=================================== ==============================================
``"red"``, ``3``, ``0.5``, ``True`` equals it (``3 == 3.0``; a bool never equals a number)
``{"any": ["red", "blue"]}``        equals one of the values (1 to 1024 of them)
``{"gte": 1, "lt": 5}``             lies in the range (``gte gt lte lt``; numeric fields)
=================================== ==============================================

A point without the field never matches. :func:`validate_filter` holds the checks and
messages every driver uses; :func:`matches` is the reference meaning of a condition.

Errors: an unknown collection raises :class:`~noa.plugin_sdk.errors.NotFound`; a vector
of the wrong dimension or with a non-finite value, a payload value of the wrong type for
its declared field, or an invalid filter raises
:class:`~noa.plugin_sdk.errors.Unprocessable`; an invalid name, distance, dimension,
field declaration or ``top_k`` raises :class:`~noa.plugin_sdk.errors.BadRequest`;
creating a collection that exists raises :class:`~noa.plugin_sdk.errors.Conflict`.
"""

from __future__ import annotations

import math
import re
import reprlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol, get_args, runtime_checkable

import msgspec
from noa.plugin_sdk.errors import BadRequest, Unprocessable

__all__ = [
    "COLLECTION_NAME_PATTERN",
    "FIELD_NAME_PATTERN",
    "INT64_MAX",
    "INT64_MIN",
    "MAX_ANY_VALUES",
    "MAX_DIM",
    "MAX_FIELDS",
    "RANGE_OPERATORS",
    "VECTORS_STATE_KEY",
    "CollectionInfo",
    "Distance",
    "FieldType",
    "Point",
    "ScoredPoint",
    "VectorStorePort",
    "as_int64",
    "integer_range",
    "matches",
    "validate_collection",
    "validate_fields",
    "validate_filter",
    "validate_payload",
]

#: The ``host.state`` key under which the retrieval plugin offers the started
#: :class:`VectorStorePort`.
VECTORS_STATE_KEY = "noa.vectors"

Distance = Literal["cosine", "dot", "euclid"]
FieldType = Literal["keyword", "integer", "float", "bool"]

# Names every backend can use as-is: a Qdrant collection, a PostgreSQL table suffix.
COLLECTION_NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}")
# Names every backend can use as-is: a Qdrant payload key, a PostgreSQL column.
FIELD_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
MAX_FIELDS = 64
MAX_ANY_VALUES = 1024
RANGE_OPERATORS: frozenset[str] = frozenset({"gte", "gt", "lte", "lt"})
# What an ``integer`` field holds: a signed 64-bit integer.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_FIELD_TYPES: frozenset[str] = frozenset(get_args(FieldType))
_NUMERIC: frozenset[str] = frozenset({"integer", "float"})
_PAYLOAD_TAKES: dict[str, str] = {
    "keyword": "a string",
    "integer": "an integer",
    "float": "a finite number",
    "bool": "true or false",
}
_short = reprlib.Repr()
_short.maxstring = 40
_short.maxother = 40


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


class CollectionInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a collection was created with, and how many points it holds now."""

    name: str
    dim: int
    distance: Distance
    fields: dict[str, FieldType]
    count: int


@runtime_checkable
class VectorStorePort(Protocol):
    """A vector store holding several collections, each of one dimension and distance."""

    async def create_collection(
        self,
        name: str,
        dim: int,
        distance: Distance,
        fields: Mapping[str, FieldType] | None = None,
    ) -> None:
        """Create an empty collection for vectors of ``dim`` floats whose payloads can
        be filtered on ``fields`` (checked with :func:`validate_fields`)."""
        ...

    async def collection_info(self, name: str) -> CollectionInfo:
        """The collection's dimension, distance, declared fields and point count."""
        ...

    async def delete_collection(self, name: str) -> bool:
        """Drop a collection and its points; ``True`` if it existed."""
        ...

    async def list_collections(self) -> list[str]:
        """The names of every collection, sorted."""
        ...

    async def upsert(self, collection: str, points: Sequence[Point]) -> None:
        """Insert points, replacing vector and payload of any id already stored.

        The batch is checked before anything is written: one bad vector or one payload
        value of the wrong type for its declared field (:func:`validate_payload`)
        rejects it all.
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
        holds fewer). ``filter`` keeps only points that meet every condition on a
        declared field (see the module docstring; checked with :func:`validate_filter`).
        """
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


#: The largest dimension any driver accepts, so a collection can move between drivers.
MAX_DIM = 4096


def validate_collection(
    name: object, dim: object, distance: object, fields: Mapping[str, FieldType] | None
) -> dict[str, FieldType]:
    """Check the arguments of ``create_collection`` (``BadRequest`` naming the one that is
    wrong); the declared fields, checked, are returned."""
    if not isinstance(name, str) or not COLLECTION_NAME_PATTERN.fullmatch(name):
        raise BadRequest(
            f"invalid collection name {name!r}: use 1 to 63 of A-Z a-z 0-9 _ -, "
            "not starting with -",
            param="name",
        )
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_DIM:
        raise BadRequest(f"dim must be an integer from 1 to {MAX_DIM}, got {dim!r}", param="dim")
    if distance not in get_args(Distance):
        known = ", ".join(sorted(get_args(Distance)))
        raise BadRequest(f"unknown distance {distance!r} (use {known})", param="distance")
    return validate_fields(fields)


def validate_fields(fields: Mapping[str, FieldType] | None) -> dict[str, FieldType]:
    """Check a collection's field declarations; a plain copy of them.

    Raises :class:`~noa.plugin_sdk.errors.BadRequest` for more than :data:`MAX_FIELDS`
    fields, a name not matching :data:`FIELD_NAME_PATTERN` or an unknown type.
    """
    if fields is None:
        return {}
    if not isinstance(fields, Mapping):
        raise BadRequest(
            f"fields must map field names to types, got {type(fields).__name__}",
            param="fields",
        )
    if len(fields) > MAX_FIELDS:
        raise BadRequest(
            f"{len(fields)} fields declared, at most {MAX_FIELDS} allowed", param="fields"
        )
    for name, field_type in fields.items():
        if not isinstance(name, str) or not FIELD_NAME_PATTERN.fullmatch(name):
            raise BadRequest(
                f"invalid field name {_short.repr(name)}: use 1 to 63 of A-Z a-z 0-9 _, "
                "not starting with a digit",
                param="fields",
            )
        if field_type not in _FIELD_TYPES:
            known = ", ".join(sorted(_FIELD_TYPES))
            raise BadRequest(
                f"field {name!r} has unknown type {_short.repr(field_type)} (use {known})",
                param="fields",
            )
    return dict(fields)


def validate_payload(
    fields: Mapping[str, FieldType], point_id: str, payload: Mapping[str, Any]
) -> None:
    """Check that every declared field ``payload`` holds has a value of its type.

    ``integer`` takes an int, ``float`` a finite int or float, ``keyword`` a str and
    ``bool`` a bool; a bool is never a number. A missing field is fine. Raises
    :class:`~noa.plugin_sdk.errors.Unprocessable` naming the point and the field.
    """
    for name, field_type in fields.items():
        if name in payload and not _is_payload_value(field_type, payload[name]):
            raise Unprocessable(
                f"point {point_id!r}: field {name!r} is declared {field_type}, which takes "
                f"{_PAYLOAD_TAKES[field_type]}; got {_short.repr(payload[name])}",
                code="wrong_payload_type",
                param="payload",
            )


def validate_filter(fields: Mapping[str, FieldType], filter: Mapping[str, Any] | None) -> None:
    """Check ``filter`` against the collection's declared ``fields``.

    Raises :class:`~noa.plugin_sdk.errors.Unprocessable`, naming the field, for a field
    that is not declared, an unknown operator, ``any`` mixed with range operators, an
    empty or oversized ``any``, a range on a ``keyword`` or ``bool`` field, or a value
    of the wrong type for the field.
    """
    if filter is None:
        return
    if not isinstance(filter, Mapping):
        raise Unprocessable(
            f"a filter maps field names to conditions, got {type(filter).__name__}",
            code="invalid_filter",
            param="filter",
        )
    for name, condition in filter.items():
        if name not in fields:
            declared = ", ".join(sorted(fields)) or "none"
            raise Unprocessable(
                f"filter on unknown field {_short.repr(name)}; declared: {declared}",
                code="unknown_filter_field",
                param="filter",
            )
        _check_condition(name, fields[name], condition)


def as_int64(value: int | float) -> int | None:
    """The integer a filter value equals when an ``integer`` field could hold it
    (``3.0`` is 3), else ``None``: such a value matches no point of that field."""
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    return value if INT64_MIN <= value <= INT64_MAX else None


def integer_range(condition: Mapping[str, float]) -> tuple[int, int] | None:
    """The inclusive range of 64-bit integers a range condition (checked by
    :func:`validate_filter`) keeps, or ``None`` when it keeps none: what a driver that
    compares integers exactly uses instead of comparing them as floats."""
    low, high = INT64_MIN, INT64_MAX
    for op, bound in condition.items():
        if op == "gte":
            low = max(low, math.ceil(bound))
        elif op == "gt":
            low = max(low, math.floor(bound) + 1)
        elif op == "lte":
            high = min(high, math.floor(bound))
        else:
            high = min(high, math.ceil(bound) - 1)
    return None if low > high else (low, high)


def matches(condition: Any, value: Any) -> bool:
    """Whether a payload ``value`` meets a ``condition`` that passed
    :func:`validate_filter`: the reference every driver's filtering must equal."""
    if isinstance(condition, Mapping):
        if "any" in condition:
            return any(_equals(wanted, value) for wanted in condition["any"])
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return all(_in_range(op, bound, value) for op, bound in condition.items())
    return _equals(condition, value)


def _equals(wanted: Any, value: Any) -> bool:
    # Python's True == 1 is not the filter's: a bool only ever equals a bool.
    if isinstance(wanted, bool) != isinstance(value, bool):
        return False
    return bool(wanted == value)


def _in_range(op: str, bound: float, value: float) -> bool:
    if op == "gte":
        return value >= bound
    if op == "gt":
        return value > bound
    if op == "lte":
        return value <= bound
    return value < bound


def _is_payload_value(field_type: str, value: Any) -> bool:
    if field_type == "keyword":
        return isinstance(value, str)
    if field_type == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if field_type == "integer":
        return isinstance(value, int)
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _check_condition(name: str, field_type: FieldType, condition: Any) -> None:
    def refuse(reason: str) -> Unprocessable:
        return Unprocessable(
            f"filter on field {name!r}: {reason}", code="invalid_filter", param="filter"
        )

    if not isinstance(condition, Mapping):
        _check_value(field_type, condition, refuse)
        return
    ops = set(condition)
    if not ops:
        raise refuse("an empty condition; give a value, {'any': [...]} or a range")
    unknown = ops - RANGE_OPERATORS - {"any"}
    if unknown:
        listed = ", ".join(sorted(_short.repr(op) for op in unknown))
        raise refuse(f"unknown operator {listed}; use any, gte, gt, lte, lt")
    if "any" in ops:
        if len(ops) > 1:
            raise refuse("'any' cannot be combined with gte, gt, lte or lt")
        values = condition["any"]
        if not isinstance(values, list | tuple):
            raise refuse(f"'any' takes a list of values, got {type(values).__name__}")
        if not 1 <= len(values) <= MAX_ANY_VALUES:
            raise refuse(f"'any' takes 1 to {MAX_ANY_VALUES} values, got {len(values)}")
        for value in values:
            _check_value(field_type, value, refuse)
        return
    if field_type not in _NUMERIC:
        raise refuse(f"a range needs an integer or float field, this one is {field_type}")
    for op in sorted(ops):
        if not _is_number(condition[op]):
            raise refuse(f"{op!r} takes a finite number, got {_short.repr(condition[op])}")


def _check_value(field_type: FieldType, value: Any, refuse: Callable[[str], Unprocessable]) -> None:
    if field_type in _NUMERIC:
        ok, takes = _is_number(value), "a finite number"
    else:
        ok, takes = _is_payload_value(field_type, value), _PAYLOAD_TAKES[field_type]
    if not ok:
        raise refuse(f"{field_type} field compared with {_short.repr(value)}; it takes {takes}")
