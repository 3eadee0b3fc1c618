"""A collection's declared payload fields as NumPy columns, so a filter is a boolean mask.

One array per declared field, one slot per stored row (a row is one stored version of a
point; see :mod:`~noa.builtin_plugins.retrieval.collection`):

=========== ===================================================== ==================
field type  column                                                missing value
=========== ===================================================== ==================
``keyword`` ``int32`` codes into a dictionary shared by the rows  ``-1``
``integer`` ``int64`` values and a ``bool`` "present" column      present = False
``float``   ``float64``                                           ``NaN``
``bool``    ``int8`` (0 or 1)                                     ``-1``
=========== ===================================================== ==================

A missing value never equals anything and falls in no range, so "a point lacking the
field never matches" needs no extra work. Conditions mean exactly what
:func:`noa.plugin_sdk.ports.vectors.matches` says; the filter has already passed
:func:`~noa.plugin_sdk.ports.vectors.validate_filter` when it gets here.

Rows below a published row count are never written again, so a search may read columns
while a writer fills rows above it; growing and compacting build new columns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from noa.plugin_sdk.errors import Unprocessable
from noa.plugin_sdk.ports.vectors import INT64_MAX, INT64_MIN, FieldType, integer_range
from numpy.typing import NDArray

__all__ = ["FieldColumns", "check_payload"]

_EMPTY: dict[str, Any] = {}


class FieldColumns:
    """The filterable columns of one collection, with room for ``capacity`` rows."""

    __slots__ = ("_arrays", "_codes", "_present", "capacity", "fields")

    def __init__(self, fields: Mapping[str, FieldType], capacity: int) -> None:
        self.fields = dict(fields)
        self.capacity = capacity
        # keyword value -> code, shared by every generation of the columns.
        self._codes: dict[str, dict[str, int]] = {
            name: {} for name, kind in self.fields.items() if kind == "keyword"
        }
        self._arrays: dict[str, NDArray[Any]] = {
            name: _empty_column(kind, capacity) for name, kind in self.fields.items()
        }
        self._present: dict[str, NDArray[np.bool_]] = {
            name: np.zeros(capacity, dtype=np.bool_)
            for name, kind in self.fields.items()
            if kind == "integer"
        }

    def set_rows(self, start: int, payloads: Sequence[Mapping[str, Any]]) -> None:
        """Fill rows ``start ..`` from their payloads (already checked)."""
        end = start + len(payloads)
        for name, kind in self.fields.items():
            values = [p.get(name, _EMPTY) for p in payloads]
            column = self._arrays[name]
            if kind == "keyword":
                codes = self._codes[name]
                column[start:end] = [
                    codes.setdefault(v, len(codes)) if isinstance(v, str) else -1 for v in values
                ]
            elif kind == "bool":
                column[start:end] = [int(v) if isinstance(v, bool) else -1 for v in values]
            elif kind == "float":
                column[start:end] = [
                    float(v) if isinstance(v, int | float) else math.nan for v in values
                ]
            else:
                present = [isinstance(v, int) and not isinstance(v, bool) for v in values]
                column[start:end] = [v if ok else 0 for v, ok in zip(values, present, strict=True)]
                self._present[name][start:end] = present

    def grown(self, capacity: int) -> FieldColumns:
        """A copy with room for ``capacity`` rows (the first rows carried over)."""
        return self._derived(capacity, slice(0, min(capacity, self.capacity)))

    def taken(self, rows: NDArray[np.intp], capacity: int) -> FieldColumns:
        """A copy holding only ``rows``, in that order, with room for ``capacity`` rows."""
        return self._derived(capacity, rows)

    def mask(self, filter: Mapping[str, Any], rows: int) -> NDArray[np.bool_]:
        """Which of the first ``rows`` rows meet every condition of ``filter``."""
        result: NDArray[np.bool_] | None = None
        for name, condition in filter.items():
            one = self._condition(name, condition, rows)
            result = one if result is None else result & one
        if result is None:
            return np.ones(rows, dtype=np.bool_)
        return result

    def _derived(self, capacity: int, source: slice | NDArray[np.intp]) -> FieldColumns:
        other = FieldColumns(self.fields, capacity)
        other._codes = self._codes
        for name, array in self._arrays.items():
            _copy_rows(array, other._arrays[name], source)
        for name, present in self._present.items():
            _copy_rows(present, other._present[name], source)
        return other

    def _condition(self, name: str, condition: Any, rows: int) -> NDArray[np.bool_]:
        kind = self.fields[name]
        column = self._arrays[name][:rows]
        if isinstance(condition, Mapping) and "any" not in condition:
            if kind == "float":
                return _float_range(column, condition)
            return _int_range(column, self._present[name][:rows], condition)
        wanted = list(condition["any"]) if isinstance(condition, Mapping) else [condition]
        if kind == "keyword":
            codes = self._codes[name]
            found = [codes[v] for v in wanted if v in codes]
            return _one_of(column, found)
        if kind == "bool":
            return _one_of(column, [int(v) for v in wanted if isinstance(v, bool)])
        numbers = [v for v in wanted if not isinstance(v, bool)]
        if kind == "float":
            return _one_of(column, [float(v) for v in numbers])
        as_ints = [int(v) for v in numbers if _is_int64(v)]
        return _one_of(column, as_ints) & self._present[name][:rows]


def check_payload(
    fields: Mapping[str, FieldType], point_id: str, payload: Mapping[str, Any]
) -> None:
    """Refuse values that passed the port's type check but that a column can't hold:
    integers beyond 64 bits, numbers too large for a float64."""
    for name, kind in fields.items():
        value = payload.get(name)
        if value is None or isinstance(value, bool):
            continue
        if kind == "integer" and not INT64_MIN <= value <= INT64_MAX:
            raise Unprocessable(
                f"point {point_id!r}: field {name!r} is declared integer, which holds "
                f"64-bit signed integers; got {value}",
                code="wrong_payload_type",
                param="payload",
            )
        if kind == "float" and isinstance(value, int):
            try:
                float(value)
            except OverflowError:
                raise Unprocessable(
                    f"point {point_id!r}: field {name!r} is declared float; {value} is "
                    "too large for a float64",
                    code="wrong_payload_type",
                    param="payload",
                ) from None


def _empty_column(kind: FieldType, capacity: int) -> NDArray[Any]:
    if kind == "keyword":
        return np.full(capacity, -1, dtype=np.int32)
    if kind == "bool":
        return np.full(capacity, -1, dtype=np.int8)
    if kind == "float":
        return np.full(capacity, np.nan, dtype=np.float64)
    return np.zeros(capacity, dtype=np.int64)


def _copy_rows(source: NDArray[Any], target: NDArray[Any], rows: slice | NDArray[np.intp]) -> None:
    taken = source[rows]
    target[: len(taken)] = taken


def _one_of(column: NDArray[Any], values: list[Any]) -> NDArray[np.bool_]:
    if not values:
        return np.zeros(len(column), dtype=np.bool_)
    if len(values) == 1:
        return np.asarray(column == values[0], dtype=np.bool_)
    return np.isin(column, np.asarray(values, dtype=column.dtype))


def _is_int64(value: Any) -> bool:
    # 3.0 equals the integer 3; 2.5 equals no integer.
    if isinstance(value, float) and not value.is_integer():
        return False
    return bool(INT64_MIN <= value <= INT64_MAX)


def _float_range(column: NDArray[np.float64], condition: Mapping[str, Any]) -> NDArray[np.bool_]:
    # NaN (missing) compares false with every bound.
    result = np.ones(len(column), dtype=np.bool_)
    for op, bound in condition.items():
        b = float(bound)
        if op == "gte":
            result &= column >= b
        elif op == "gt":
            result &= column > b
        elif op == "lte":
            result &= column <= b
        else:
            result &= column < b
    return result


def _int_range(
    column: NDArray[np.int64], present: NDArray[np.bool_], condition: Mapping[str, Any]
) -> NDArray[np.bool_]:
    # The bounds become one inclusive range of integers, compared exactly in int64.
    bounds = integer_range(condition)
    if bounds is None:
        return np.zeros(len(column), dtype=np.bool_)
    low, high = bounds
    result = present.copy()
    if low > INT64_MIN:
        result &= column >= low
    if high < INT64_MAX:
        result &= column <= high
    return result
