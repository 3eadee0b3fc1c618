"""What a collection holds in memory, row by row, and the immutable view a search reads.

A row is one stored version of a point: every upsert takes fresh rows at the end, and
replacing or deleting an id leaves its old row dead. :class:`Rows` keeps, per row, the
int8 codes and scale of the first search pass, the squared norm, whether it is alive and
the declared fields' columns, besides the ids and payloads; the float32 rows stay in the
memory-mapped vectors file. One thread at a time changes it: the collection's writer,
or its catch-up on what other processes wrote.

Rows below the published count are never written again, and arrays are replaced rather
than resized when they grow (``alive`` is copied on write), so a search needs no lock:
it takes the current :class:`View` once and works on that while later rows are filled.

**Search.** Filters become a boolean mask over the columns of the declared fields
(:mod:`~noa.builtin_plugins.retrieval.field_columns`). Small selections are scored
exactly in float32; large ones with the int8 first pass of
:mod:`~noa.builtin_plugins.retrieval.scan_kernels`. Either way the best
``2 * top_k + 100`` candidates are rescored in float64 from the float32 rows, which
gives the final order (ties: the earlier row first) and scores.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
from noa.builtin_plugins.retrieval.field_columns import FieldColumns
from noa.builtin_plugins.retrieval.scan_kernels import (
    dots_all,
    dots_rows,
    quantize,
    scan_all,
    scan_rows,
)
from noa.plugin_sdk.ports.vectors import Distance, FieldType
from numpy.typing import NDArray

__all__ = ["MIN_CAPACITY", "Hit", "Rows", "View"]

Hit = tuple[str, float, dict[str, Any]]

MIN_CAPACITY = 64
# Rows per quantisation step.
_CHUNK = 16_384
_payloads_decoder = msgspec.msgpack.Decoder(list[dict[str, Any]])


class Rows:
    """Every row of one generation: ``used`` rows filled, ``dead`` of them dead."""

    __slots__ = (
        "_alive",
        "_codes",
        "_columns",
        "_id_rows",
        "_scales",
        "_sqnorms",
        "dead",
        "dim",
        "ids",
        "payloads",
        "used",
    )

    def __init__(self, dim: int, fields: dict[str, FieldType], capacity: int = 0) -> None:
        self.dim = dim
        self.used = 0
        self.dead = 0
        self.ids: list[str] = []
        self.payloads: list[dict[str, Any]] = []
        self._id_rows: dict[str, int] = {}
        self._codes = np.zeros((capacity, dim), dtype=np.int8)
        self._scales = np.ones(capacity, dtype=np.float32)
        self._sqnorms = np.zeros(capacity, dtype=np.float32)
        self._alive = np.zeros(capacity, dtype=np.bool_)
        self._columns = FieldColumns(fields, capacity)

    def __contains__(self, point_id: str) -> bool:
        return point_id in self._id_rows

    def reserve(self, rows: int) -> None:
        """Room for ``rows`` rows, growing by doubling."""
        if rows > len(self._alive):
            self._resize(max(rows, 2 * len(self._alive), MIN_CAPACITY))

    def upserted(
        self, start: int, ids: list[str], payloads: msgspec.Raw, vectors: NDArray[np.float32]
    ) -> None:
        """Fill rows ``start ..`` (``start`` is ``used``) with these points; an id stored
        before moves to its new row."""
        decoded = _payloads_decoder.decode(payloads)
        end = start + len(ids)
        self.reserve(end)
        for first in range(0, len(ids), _CHUNK):
            chunk = vectors[first : first + _CHUNK]
            rows = slice(start + first, start + first + len(chunk))
            self._codes[rows], self._scales[rows] = quantize(chunk)
            self._sqnorms[rows] = np.einsum("ij,ij->i", chunk, chunk)
        self._columns.set_rows(start, decoded)
        self._alive[start:end] = True
        replaced = [self._id_rows[i] for i in ids if i in self._id_rows]
        if replaced:
            self._kill(replaced)
        self._id_rows.update(zip(ids, range(start, end), strict=True))
        self.ids.extend(ids)
        self.payloads.extend(decoded)
        self.used = end

    def deleted(self, ids: list[str]) -> None:
        self._kill([self._id_rows.pop(i) for i in ids if i in self._id_rows])

    def live(self) -> NDArray[np.intp]:
        return np.flatnonzero(self._alive[: self.used])

    def compacted(self, capacity: int) -> Rows:
        """Only the live rows, in their order, renumbered from 0."""
        live = self.live()
        other = Rows(self.dim, self._columns.fields)
        other._codes = _taken(self._codes, live, capacity)
        other._scales = _taken(self._scales, live, capacity)
        other._sqnorms = _taken(self._sqnorms, live, capacity)
        other._alive = np.zeros(capacity, dtype=np.bool_)
        other._alive[: len(live)] = True
        other._columns = self._columns.taken(live, capacity)
        other.ids = [self.ids[r] for r in live]
        other.payloads = [self.payloads[r] for r in live]
        other._id_rows = {point_id: row for row, point_id in enumerate(other.ids)}
        other.used = len(live)
        return other

    def view(
        self,
        matrix: NDArray[np.float32],
        distance: Distance,
        exact_max_values: int,
        log: tuple[str, int, int],
    ) -> View:
        """What a search reads now. ``log`` is the record log's path, inode and the end
        of what these rows hold, by which a search sees that the files moved on."""
        return View(self, matrix, distance, exact_max_values, log)

    def _kill(self, rows: list[int]) -> None:
        # Copy on write: a search may be reading the array the current view holds.
        alive = self._alive.copy()
        alive[rows] = False
        self._alive = alive
        self.dead += len(rows)

    def _resize(self, capacity: int) -> None:
        # New arrays, never resized in place: the current view keeps the old ones.
        keep = self.used
        codes = np.zeros((capacity, self.dim), dtype=np.int8)
        codes[:keep] = self._codes[:keep]
        scales = np.ones(capacity, dtype=np.float32)
        scales[:keep] = self._scales[:keep]
        sqnorms = np.zeros(capacity, dtype=np.float32)
        sqnorms[:keep] = self._sqnorms[:keep]
        alive = np.zeros(capacity, dtype=np.bool_)
        alive[:keep] = self._alive[:keep]
        self._codes, self._scales, self._sqnorms, self._alive = codes, scales, sqnorms, alive
        self._columns = self._columns.grown(capacity)


class View:
    """What a search reads: the first ``rows`` rows of these arrays, never changed."""

    __slots__ = (
        "alive",
        "codes",
        "columns",
        "dead",
        "distance",
        "exact_max_values",
        "ids",
        "log_inode",
        "log_path",
        "log_size",
        "matrix",
        "payloads",
        "rows",
        "scales",
        "sqnorms",
    )

    def __init__(
        self,
        rows: Rows,
        matrix: NDArray[np.float32],
        distance: Distance,
        exact_max_values: int,
        log: tuple[str, int, int],
    ) -> None:
        self.rows = rows.used
        self.dead = rows.dead
        self.matrix = matrix
        self.codes = rows._codes
        self.scales = rows._scales
        self.sqnorms = rows._sqnorms
        self.alive = rows._alive
        self.columns = rows._columns
        self.ids = rows.ids
        self.payloads = rows.payloads
        self.distance = distance
        self.exact_max_values = exact_max_values
        self.log_path, self.log_inode, self.log_size = log

    @property
    def count(self) -> int:
        return self.rows - self.dead

    def search(
        self, query: NDArray[np.float64], top_k: int, filter: dict[str, Any] | None
    ) -> list[Hit]:
        """The ``top_k`` best rows for ``query`` (cosine: already normalised)."""
        selected = self.columns.mask(filter, self.rows) if filter else None
        if self.dead:
            alive = self.alive[: self.rows]
            selected = alive if selected is None else selected & alive
        rows = None if selected is None else np.flatnonzero(selected)
        count = self.rows if rows is None else len(rows)
        if count == 0:
            return []
        query32 = query.astype(np.float32)
        if count * self.matrix.shape[1] <= self.exact_max_values:
            if rows is None:
                dots = dots_all(self.matrix, query32, self.rows)
            else:
                dots = dots_rows(self.matrix, query32, rows)
        elif rows is None:
            dots = scan_all(self.codes, self.scales, query32, self.rows)
        else:
            dots = scan_rows(self.codes, self.scales, query32, rows)
        if self.distance == "euclid":
            # The nearest rows have the largest 2 x.q - |x|^2 (|q|^2 is the same for all).
            norms = self.sqnorms[: self.rows] if rows is None else self.sqnorms[rows]
            dots = 2 * dots - norms
        wanted = min(count, 2 * top_k + 100)
        best = np.argpartition(-dots, wanted - 1)[:wanted] if wanted < count else None
        if rows is None:
            candidates = best if best is not None else np.arange(count)
        else:
            candidates = rows[best] if best is not None else rows
        return self._rescored(candidates, query, top_k)

    def _rescored(
        self, rows: NDArray[np.intp], query: NDArray[np.float64], top_k: int
    ) -> list[Hit]:
        stored = self.matrix[rows].astype(np.float64)
        if self.distance == "euclid":
            scores = np.sqrt(np.square(stored - query).sum(axis=1))
            order = np.lexsort((rows, scores))
        else:
            scores = np.einsum("ij,j->i", stored, query)  # not BLAS: see scan_kernels
            order = np.lexsort((rows, -scores))
        return [
            (self.ids[rows[i]], float(scores[i]), self.payloads[rows[i]]) for i in order[:top_k]
        ]


def _taken(array: NDArray[Any], rows: NDArray[np.intp], capacity: int) -> NDArray[Any]:
    out = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
    out[: len(rows)] = array[rows]
    return out
