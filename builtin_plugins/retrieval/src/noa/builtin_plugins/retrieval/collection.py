"""One collection of the embedded vector store: its durable writes and its exact search.

Its methods are synchronous and CPU- or disk-bound; the async driver runs them in worker
threads, one writer at a time per collection and any number of searches beside it.

**Rows.** Every upserted point gets a fresh row at the end of the vectors file; replacing
an id leaves its old row dead, as does deleting it. Rows that readers can see are never
written again, so a search needs no lock: it takes the current :class:`_View` (row
count, arrays, ids, payloads) once and works on that, while a writer fills rows past it
and then publishes a new view with one attribute assignment.

**Durability.** An upsert (1) writes the new rows with ``pwrite`` and syncs the vectors
file, then (2) appends an ``Upserted`` record naming those rows, their ids, payloads and
a CRC of their bytes to the record log and syncs it. Step 2 is the commit: a crash
before it leaves unreferenced bytes past the last committed row, which the next upsert
overwrites, or a torn last record, which reopening cuts off. An interrupted upsert is
therefore wholly absent after a restart, and an acknowledged one wholly present.
Reopening replays the log (ids, payloads, tombstones; the vectors stay in the
memory-mapped file) and checks every record's CRC against its rows.

**Compaction.** When dead rows outnumber live ones (and number at least 1,024), the live
rows are copied into generation ``g + 1`` (a new vectors file and a log holding one
snapshot), both synced, and ``manifest.json`` is switched to it atomically; the old
files are deleted afterwards (or at the next open, after a crash).

**Search.** Filters become a boolean mask over the columns of the declared fields
(:mod:`~noa.builtin_plugins.retrieval.field_columns`). Small selections are scored
exactly in float32; large ones with the int8 first pass of
:mod:`~noa.builtin_plugins.retrieval.scan_kernels`. Either way the best
``2 * top_k + 100`` candidates are rescored in float64 from the float32 rows, which
gives the final order (ties: the earlier row first) and scores.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
import zlib
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from noa.builtin_plugins.retrieval import collection_files as files
from noa.builtin_plugins.retrieval.field_columns import FieldColumns
from noa.builtin_plugins.retrieval.record_log import (
    CorruptFile,
    Deleted,
    RecordLog,
    Upserted,
    encode,
    sync_file,
)
from noa.builtin_plugins.retrieval.scan_kernels import (
    dots_all,
    dots_rows,
    quantize,
    scan_all,
    scan_rows,
)
from noa.plugin_sdk.ports.vectors import Distance, FieldType
from numpy.typing import NDArray

__all__ = ["Collection", "Hit"]

log = logging.getLogger("noa.retrieval")

Hit = tuple[str, float, dict[str, Any]]

_MIN_CAPACITY = 64
_COMPACT_MIN_DEAD = 1024
# Rows per record of a compacted log and per quantisation step at open.
_CHUNK = 16_384
_payloads_decoder = msgspec.msgpack.Decoder(list[dict[str, Any]])


class _View:
    """What a search reads: the first ``rows`` rows of these arrays."""

    __slots__ = (
        "alive",
        "codes",
        "columns",
        "dead",
        "ids",
        "matrix",
        "payloads",
        "rows",
        "scales",
        "sqnorms",
    )

    def __init__(self, **parts: Any) -> None:
        for name, value in parts.items():
            setattr(self, name, value)

    rows: int
    dead: int
    matrix: NDArray[np.float32]
    codes: NDArray[np.int8]
    scales: NDArray[np.float32]
    sqnorms: NDArray[np.float32]
    alive: NDArray[np.bool_]
    columns: FieldColumns
    ids: list[str]
    payloads: list[dict[str, Any]]


class Collection:
    """An open collection folder. Not thread-safe for writers: one at a time."""

    def __init__(self, folder: Path, manifest: files.Manifest, exact_max_values: int) -> None:
        self.folder = folder
        self.name = folder.name
        self.dim = manifest.dim
        self.distance: Distance = manifest.distance
        self.fields: dict[str, FieldType] = dict(manifest.fields)
        self.exact_max_values = exact_max_values
        self._generation = manifest.generation
        self._vectors_fd = -1
        self._log: RecordLog | None = None
        self._id_rows: dict[str, int] = {}
        self._ids: list[str] = []
        self._payloads: list[dict[str, Any]] = []
        self._rows = 0
        self._dead = 0
        self._matrix = np.empty((0, self.dim), dtype=np.float32)
        self._codes = np.empty((0, self.dim), dtype=np.int8)
        self._scales = np.empty(0, dtype=np.float32)
        self._sqnorms = np.empty(0, dtype=np.float32)
        self._alive = np.empty(0, dtype=np.bool_)
        self._columns = FieldColumns(self.fields, 0)
        self._view = self._snapshot()

    # -- opening and creating ---------------------------------------------------------------

    @classmethod
    def create(
        cls,
        root: Path,
        name: str,
        dim: int,
        distance: Distance,
        fields: dict[str, FieldType],
        exact_max_values: int,
    ) -> Collection:
        """Make the folder beside its final name, then rename it into place."""
        building = root / f".creating-{name}-{uuid.uuid4().hex}"
        building.mkdir()
        try:
            manifest = files.Manifest(
                format=files.FORMAT, dim=dim, distance=distance, fields=fields, generation=0
            )
            fd = os.open(files.vectors_path(building, 0), os.O_WRONLY | os.O_CREAT, 0o644)
            os.fsync(fd)
            os.close(fd)
            RecordLog.create(files.log_path(building, 0), [])
            files.write_manifest(building, manifest)
            os.rename(building, root / name)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        files.sync_folder(root)
        return cls.open(root / name, exact_max_values)

    @classmethod
    def open(cls, folder: Path, exact_max_values: int) -> Collection:
        """Open a collection folder and replay its log; raises :class:`CorruptFile`."""
        manifest = files.read_manifest(folder)
        files.remove_strays(folder, manifest.generation)
        collection = cls(folder, manifest, exact_max_values)
        try:
            collection._load()
        except BaseException:
            collection.close()
            raise
        return collection

    def _load(self) -> None:
        vectors = files.vectors_path(self.folder, self._generation)
        self._vectors_fd = os.open(vectors, os.O_RDWR)
        self._log, records, note = RecordLog.open(files.log_path(self.folder, self._generation))
        if note:
            log.warning("collection %r: %s", self.name, note)
        matrix = files.map_rows(self._vectors_fd, self.dim)
        self._resize(len(matrix))
        self._matrix = matrix
        for index, (offset, record) in enumerate(records):
            if isinstance(record, Deleted):
                self._apply_deleted(record.ids)
                continue
            end = record.start + len(record.ids)
            problem = None
            if record.start != self._rows:
                raise CorruptFile(
                    self._log.path,
                    f"record at byte {offset} starts at row {record.start}, expected {self._rows}",
                )
            if end > len(matrix):
                problem = f"rows {record.start}..{end} lie past its end ({len(matrix)} rows)"
            elif zlib.crc32(matrix[record.start : end].data) != record.vectors_crc:
                problem = f"rows {record.start}..{end} do not match their checksum"
            if problem is not None:
                if index != len(records) - 1:
                    raise CorruptFile(vectors, problem)
                log.warning(
                    "collection %r: %s: %s; dropped the last upsert, which a crash interrupted",
                    self.name,
                    vectors,
                    problem,
                )
                self._log.truncate(offset)
                break
            self._apply_upserted(
                record.start, record.ids, record.payloads, matrix[record.start : end]
            )
        self._view = self._snapshot()

    # -- writing ----------------------------------------------------------------------------

    def upsert(self, ids: list[str], vectors: NDArray[np.float32], payloads: msgspec.Raw) -> None:
        """Store checked points durably, then make them visible. ``vectors`` are
        ``(len(ids), dim)`` float32 (cosine: already normalised); ``payloads`` is the
        msgpack encoding of their payload list. Ids are distinct."""
        assert self._log is not None
        start = self._rows
        self._reserve(start + len(ids))
        data = np.ascontiguousarray(vectors, dtype="<f4")
        files.write_all_at(self._vectors_fd, data.data, start * self.dim * 4)
        sync_file(self._vectors_fd)
        record = Upserted(
            start=start, ids=ids, payloads=payloads, vectors_crc=zlib.crc32(data.data)
        )
        self._log.append(encode(record))
        self._apply_upserted(start, ids, payloads, data)
        self._view = self._snapshot()
        self._compact_if_worth_it()

    def delete(self, ids: list[str]) -> int:
        """Remove points durably; how many existed."""
        assert self._log is not None
        present = [point_id for point_id in dict.fromkeys(ids) if point_id in self._id_rows]
        if not present:
            return 0
        self._log.append(encode(Deleted(ids=present)))
        self._apply_deleted(present)
        self._view = self._snapshot()
        self._compact_if_worth_it()
        return len(present)

    def _apply_upserted(
        self, start: int, ids: list[str], payloads: msgspec.Raw, vectors: NDArray[np.float32]
    ) -> None:
        decoded = _payloads_decoder.decode(payloads)
        end = start + len(ids)
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
        self._ids.extend(ids)
        self._payloads.extend(decoded)
        self._rows = end

    def _apply_deleted(self, ids: list[str]) -> None:
        self._kill([self._id_rows.pop(i) for i in ids if i in self._id_rows])

    def _kill(self, rows: list[int]) -> None:
        # Copy on write: a search may be reading the array the current view holds.
        alive = self._alive.copy()
        alive[rows] = False
        self._alive = alive
        self._dead += len(rows)

    def _reserve(self, rows: int) -> None:
        """Room for ``rows`` rows: grow the vectors file and the arrays by doubling."""
        if rows <= len(self._matrix):
            return
        capacity = max(rows, 2 * len(self._matrix), _MIN_CAPACITY)
        os.ftruncate(self._vectors_fd, capacity * self.dim * 4)
        self._resize(capacity)
        self._matrix = files.map_rows(self._vectors_fd, self.dim)

    def _resize(self, capacity: int) -> None:
        # New arrays, never resized in place: the current view keeps the old ones.
        keep = self._rows
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

    def _snapshot(self) -> _View:
        return _View(
            rows=self._rows,
            dead=self._dead,
            matrix=self._matrix,
            codes=self._codes,
            scales=self._scales,
            sqnorms=self._sqnorms,
            alive=self._alive,
            columns=self._columns,
            ids=self._ids,
            payloads=self._payloads,
        )

    # -- compaction -------------------------------------------------------------------------

    def _compact_if_worth_it(self) -> None:
        if self._dead < _COMPACT_MIN_DEAD or self._dead <= self._rows - self._dead:
            return
        try:
            self.compact()
        except OSError as exc:
            # The data is safe in the current generation; compaction is tried again later.
            log.warning("collection %r: compaction failed, will retry: %s", self.name, exc)

    def compact(self) -> None:
        """Copy the live rows into a new generation and switch the manifest to it."""
        assert self._log is not None
        generation = self._generation + 1
        live = np.flatnonzero(self._alive[: self._rows])
        capacity = max(_MIN_CAPACITY, len(live) + len(live) // 2)
        vectors = files.vectors_path(self.folder, generation)
        points = files.log_path(self.folder, generation)
        for stale in (vectors, points):
            stale.unlink(missing_ok=True)
        fd = os.open(vectors, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.ftruncate(fd, capacity * self.dim * 4)
            bodies = []
            for first in range(0, len(live), _CHUNK):
                rows = live[first : first + _CHUNK]
                data = np.ascontiguousarray(self._matrix[rows])
                files.write_all_at(fd, data.data, first * self.dim * 4)
                record = Upserted(
                    start=first,
                    ids=[self._ids[r] for r in rows],
                    payloads=msgspec.Raw(msgspec.msgpack.encode([self._payloads[r] for r in rows])),
                    vectors_crc=zlib.crc32(data.data),
                )
                bodies.append(encode(record))
            os.fsync(fd)
            RecordLog.create(points, bodies)
            files.sync_folder(self.folder)
            manifest = files.Manifest(
                format=files.FORMAT,
                dim=self.dim,
                distance=self.distance,
                fields=self.fields,
                generation=generation,
            )
            try:
                files.write_manifest(self.folder, manifest)
            except OSError:
                # Past the rename the new generation is the collection, synced or not.
                if files.read_manifest(self.folder).generation != generation:
                    raise
        except BaseException:
            os.close(fd)
            vectors.unlink(missing_ok=True)
            points.unlink(missing_ok=True)
            raise
        old_fd, old_log, old_generation = self._vectors_fd, self._log, self._generation
        self._vectors_fd, self._generation = fd, generation
        self._log, _, _ = RecordLog.open(points)
        self._matrix = files.map_rows(fd, self.dim)
        self._codes = _taken(self._codes, live, capacity)
        self._scales = _taken(self._scales, live, capacity)
        self._sqnorms = _taken(self._sqnorms, live, capacity)
        self._alive = np.zeros(capacity, dtype=np.bool_)
        self._alive[: len(live)] = True
        self._columns = self._columns.taken(live, capacity)
        self._ids = [self._ids[r] for r in live]
        self._payloads = [self._payloads[r] for r in live]
        self._id_rows = {point_id: row for row, point_id in enumerate(self._ids)}
        self._rows, self._dead = len(live), 0
        self._view = self._snapshot()
        os.close(old_fd)
        old_log.close()
        files.remove_strays(self.folder, generation)
        log.info(
            "collection %r: compacted generation %d into %d (%d live rows)",
            self.name,
            old_generation,
            generation,
            len(live),
        )

    # -- reading ----------------------------------------------------------------------------

    @property
    def count(self) -> int:
        view = self._view
        return view.rows - view.dead

    def search(
        self, query: NDArray[np.float64], top_k: int, filter: dict[str, Any] | None
    ) -> list[Hit]:
        """The ``top_k`` best rows for ``query`` (cosine: already normalised)."""
        view = self._view
        selected = view.columns.mask(filter, view.rows) if filter else None
        if view.dead:
            alive = view.alive[: view.rows]
            selected = alive if selected is None else selected & alive
        rows = None if selected is None else np.flatnonzero(selected)
        count = view.rows if rows is None else len(rows)
        if count == 0:
            return []
        query32 = query.astype(np.float32)
        if count * self.dim <= self.exact_max_values:
            if rows is None:
                dots = dots_all(view.matrix, query32, view.rows)
            else:
                dots = dots_rows(view.matrix, query32, rows)
        elif rows is None:
            dots = scan_all(view.codes, view.scales, query32, view.rows)
        else:
            dots = scan_rows(view.codes, view.scales, query32, rows)
        if self.distance == "euclid":
            # The nearest rows have the largest 2 x.q - |x|^2 (|q|^2 is the same for all).
            norms = view.sqnorms[: view.rows] if rows is None else view.sqnorms[rows]
            dots = 2 * dots - norms
        wanted = min(count, 2 * top_k + 100)
        best = np.argpartition(-dots, wanted - 1)[:wanted] if wanted < count else None
        if rows is None:
            candidates = best if best is not None else np.arange(count)
        else:
            candidates = rows[best] if best is not None else rows
        return self._rescored(view, candidates, query, top_k)

    def _rescored(
        self, view: _View, rows: NDArray[np.intp], query: NDArray[np.float64], top_k: int
    ) -> list[Hit]:
        stored = view.matrix[rows].astype(np.float64)
        if self.distance == "euclid":
            scores = np.sqrt(np.square(stored - query).sum(axis=1))
            order = np.lexsort((rows, scores))
        else:
            scores = np.einsum("ij,j->i", stored, query)  # not BLAS: see scan_kernels
            order = np.lexsort((rows, -scores))
        return [
            (view.ids[rows[i]], float(scores[i]), view.payloads[rows[i]]) for i in order[:top_k]
        ]

    # -- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the files. Arrays stay readable for searches still holding a view."""
        if self._vectors_fd >= 0:
            os.close(self._vectors_fd)
            self._vectors_fd = -1
        if self._log is not None:
            self._log.close()
            self._log = None

    def drop(self, root: Path) -> None:
        """Delete the collection: renamed away first, so a crash never leaves half of it
        under its name."""
        self.close()
        doomed = root / f".deleting-{self.name}-{uuid.uuid4().hex}"
        os.rename(self.folder, doomed)
        files.sync_folder(root)
        shutil.rmtree(doomed, ignore_errors=True)


def _taken(array: NDArray[Any], rows: NDArray[np.intp], capacity: int) -> NDArray[Any]:
    out = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
    out[: len(rows)] = array[rows]
    return out
