"""One collection of the embedded vector store: durable writes, shared by processes.

Its methods are synchronous and CPU- or disk-bound; the async driver runs them in worker
threads. Several processes may open the same folder, each with its own
:class:`Collection`; each reads and writes, and each sees what the others committed.
What is kept in memory, and how a search reads it with no lock, is in
:mod:`~noa.builtin_plugins.retrieval.collection_rows`.

**Durability.** An upsert (1) writes the new rows past the last committed one with
``pwrite`` and syncs the vectors file, then (2) appends an ``Upserted`` record naming
those rows, their ids, payloads and a CRC of their bytes to the record log and syncs it.
Step 2 is the commit: a crash before it leaves unreferenced bytes past the last
committed row, which the next upsert overwrites, or a torn last record, which the next
writer cuts off. An interrupted upsert is therefore wholly absent after a restart, and
an acknowledged one wholly present. Opening replays the log (ids, payloads, tombstones;
the vectors stay in the memory-mapped file) and checks every record's CRC against its
rows.

**Compaction.** When dead rows outnumber live ones (and number at least 1,024), the live
rows are copied into generation ``g + 1`` (a new vectors file and a log holding one
snapshot), both synced, and ``manifest.json`` is switched to it atomically; the old
files are deleted afterwards (or by the next writer, after a crash).

**Several processes.** Writers take turns on the collection's write lock, an ``flock``
on ``.write.lock`` that this process's threads also queue for
(:mod:`~noa.builtin_plugins.retrieval.file_locks`). It is held for every upsert, delete
and compaction, and for the repairs only a sole writer may make: cutting off a torn last
record, deleting other generations' files. Opening repairs too when it finds either,
once it holds the lock (a record that looked torn may just have been in the middle of
being written). Inside one process a ``threading.Lock`` (``_changing``), taken after the
write lock, serialises what changes the in-memory state: a write, or a catch-up.

Each process knows the generation it has loaded and how far it has read its log. A
writer, holding the write lock, reads the manifest and reads on to the end of the log
before it writes. A search or count first makes one ``stat`` of its log's path (a
microsecond or two): the same inode and the size already read mean nothing changed, and
the published view serves as it is. Otherwise, under ``_changing``, it catches up:

- the log grew: the new whole records are applied (the vectors file mapped again when
  they reach past the mapping), costing about what the writer spent in memory. An
  incomplete last record is left alone, and read again at the next search: another
  process may be writing it right now;
- the path names another file or none: another process compacted (the manifest names a
  newer generation, loaded from scratch, about as long as opening it) or deleted the
  collection (its ``.write.lock`` is gone, or is another file): :class:`CollectionGone`.

Until a process catches up it keeps the files it has open, so the disk space of a
compacted generation or a deleted collection comes back once every process has moved on.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
import zlib
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from noa.builtin_plugins.retrieval import collection_files as files
from noa.builtin_plugins.retrieval.collection_rows import MIN_CAPACITY, Hit, Rows, View
from noa.builtin_plugins.retrieval.file_locks import FileLock
from noa.builtin_plugins.retrieval.record_log import (
    START,
    CorruptFile,
    Deleted,
    RecordLog,
    Upserted,
    encode,
    sync_file,
)
from noa.plugin_sdk.ports.vectors import Distance, FieldType
from numpy.typing import NDArray

__all__ = ["Collection", "CollectionGone", "Hit"]

log = logging.getLogger("noa.retrieval")

_COMPACT_MIN_DEAD = 1024
# Rows per record of a compacted log.
_CHUNK = 16_384


class CollectionGone(Exception):
    """Another process deleted the collection (and may have made a new one by its name)."""


class Collection:
    """An open collection folder. Any number of threads may search it; the driver lets
    one at a time write."""

    def __init__(self, folder: Path, manifest: files.Manifest, exact_max_values: int) -> None:
        self.folder = folder
        self.name = folder.name
        self.dim = manifest.dim
        self.distance: Distance = manifest.distance
        self.fields: dict[str, FieldType] = dict(manifest.fields)
        self.exact_max_values = exact_max_values
        self._write_lock = FileLock(folder / files.WRITE_LOCK)
        self._identity = self._write_lock.inode
        self._changing = threading.Lock()
        self._closed = False
        self._generation = -1
        self._vectors_fd = -1
        self._log: RecordLog | None = None
        self._matrix = np.empty((0, self.dim), dtype=np.float32)
        self._rows = Rows(self.dim, self.fields)
        self._view = self._rows.view(self._matrix, self.distance, exact_max_values, ("", 0, 0))

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
        """Make the folder beside its final name, then rename it into place (holding the
        store's catalog lock)."""
        building = root / f".creating-{name}-{uuid.uuid4().hex}"
        building.mkdir()
        try:
            manifest = files.Manifest(
                format=files.FORMAT, dim=dim, distance=distance, fields=fields, generation=0
            )
            for made in (files.vectors_path(building, 0), building / files.WRITE_LOCK):
                fd = os.open(made, os.O_WRONLY | os.O_CREAT, 0o644)
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
        """Open a collection folder and replay its log (holding the store's catalog lock,
        so it is not deleted meanwhile); raises :class:`CorruptFile`."""
        collection = cls(folder, files.read_manifest(folder), exact_max_values)
        try:
            with collection._changing:
                whole = collection._follow_manifest()
                tidy = not files.strays(folder, collection._generation)
            if not (whole and tidy):
                collection._repair()
        except BaseException:
            collection.close()
            raise
        return collection

    def _repair(self) -> None:
        """Cut off a torn last record and delete stray files, as the sole writer (a
        record that only looked torn was being written, and is whole once we hold it)."""
        with self._write_lock.exclusive(), self._changing:
            self._refresh_for_writing()

    # -- catching up ------------------------------------------------------------------------

    def view(self) -> View:
        """The published view, caught up with what other processes committed."""
        view = self._view
        try:
            stat = os.stat(view.log_path)
        except OSError:
            pass
        else:
            if stat.st_size == view.log_size and stat.st_ino == view.log_inode:
                return view
        with self._changing:
            self._refresh()
            return self._view

    def still_here(self) -> bool:
        """Whether the folder still holds this collection, not a newer one by its name."""
        try:
            return os.stat(self.folder / files.WRITE_LOCK).st_ino == self._identity
        except OSError:
            return False

    def _refresh(self) -> None:
        """Catch up as a reader (holding ``_changing``)."""
        if self._log is None:
            raise CollectionGone(self.name)
        try:
            inode = os.stat(self._log.path).st_ino
        except FileNotFoundError:
            inode = -1
        if inode == self._log.inode:
            self._catch_up(repair=False)
        else:
            self._follow_manifest()

    def _refresh_for_writing(self) -> RecordLog:
        """Catch up and repair as the sole writer (holding the write lock and
        ``_changing``); the log to append to."""
        if self._closed:
            raise CollectionGone(self.name)
        manifest = self._own_manifest()
        if manifest.generation != self._generation:
            self._load(manifest.generation, repair=True)
        else:
            self._catch_up(repair=True)
        files.remove_strays(self.folder, self._generation)
        assert self._log is not None
        return self._log

    def _follow_manifest(self) -> bool:
        """Load the generation the manifest names, as a reader; whether its log was read
        to the end. A compaction elsewhere may delete it before it is open: try again."""
        while True:
            manifest = self._own_manifest()
            if manifest.generation == self._generation:
                assert self._log is not None
                raise CorruptFile(self._log.path, "missing, though the manifest names it")
            try:
                return self._load(manifest.generation, repair=False)
            except FileNotFoundError:
                if self._own_manifest().generation == manifest.generation:
                    raise

    def _own_manifest(self) -> files.Manifest:
        if not self.still_here():
            raise CollectionGone(self.name)
        try:
            return files.read_manifest(self.folder)
        except CorruptFile:
            if not self.still_here():  # renamed away while being read
                raise CollectionGone(self.name) from None
            raise

    def _load(self, generation: int, *, repair: bool) -> bool:
        """Replace everything with ``generation`` read from scratch; see :meth:`_catch_up`."""
        vectors_fd = os.open(files.vectors_path(self.folder, generation), os.O_RDWR)
        try:
            record_log = RecordLog.open(files.log_path(self.folder, generation))
        except BaseException:
            os.close(vectors_fd)
            raise
        self._close_files()
        self._generation, self._vectors_fd, self._log = generation, vectors_fd, record_log
        self._matrix = files.map_rows(vectors_fd, self.dim)
        self._rows = Rows(self.dim, self.fields, len(self._matrix))
        return self._catch_up(repair=repair)

    def _catch_up(self, *, repair: bool) -> bool:
        """Apply the whole records past what was read, and publish them; whether the log
        was read to its end. An incomplete last record (and an upsert whose rows don't
        match, which only a crash explains) is cut off when ``repair``, else left."""
        record_log = self._log
        assert record_log is not None
        if record_log.size == START:
            return self._apply_new(record_log, repair=repair)
        try:
            return self._apply_new(record_log, repair=repair)
        except CorruptFile:
            # Maybe what was read here is no longer there: an append whose sync failed
            # is cut back by its writer, who may have appended another since. Read this
            # generation again from its start, which raises again if the file is damaged.
            return self._load(self._generation, repair=repair)

    def _apply_new(self, record_log: RecordLog, *, repair: bool) -> bool:
        records, end, size = record_log.read_new()
        problem = None
        for index, (offset, record) in enumerate(records):
            if isinstance(record, Deleted):
                self._rows.deleted(record.ids)
                continue
            problem = self._rows_problem(offset, record)
            if problem is not None:
                if index != len(records) - 1:
                    raise CorruptFile(files.vectors_path(self.folder, self._generation), problem)
                end = offset
                break
            stop = record.start + len(record.ids)
            self._rows.upserted(
                record.start, record.ids, record.payloads, self._matrix[record.start : stop]
            )
        record_log.advance(end)
        if end < size and repair:
            if problem is not None:
                log.warning(
                    "collection %r: %s: %s; dropped the last upsert, which a crash interrupted",
                    self.name,
                    files.vectors_path(self.folder, self._generation),
                    problem,
                )
            else:
                log.warning(
                    "collection %r: %s: cut off a torn record at byte %d (%d bytes): the "
                    "write a crash interrupted, never acknowledged",
                    self.name,
                    record_log.path,
                    end,
                    size - end,
                )
            record_log.truncate(end)
        self._publish()
        return record_log.size >= size

    def _rows_problem(self, offset: int, record: Upserted) -> str | None:
        """Why the rows ``record`` names can't be served, if they can't."""
        if record.start != self._rows.used:
            assert self._log is not None
            raise CorruptFile(
                self._log.path,
                f"record at byte {offset} starts at row {record.start}, expected {self._rows.used}",
            )
        stop = record.start + len(record.ids)
        if stop > len(self._matrix):
            # Another process grew the file.
            self._matrix = files.map_rows(self._vectors_fd, self.dim)
        if stop > len(self._matrix):
            return f"rows {record.start}..{stop} lie past its end ({len(self._matrix)} rows)"
        if zlib.crc32(self._matrix[record.start : stop].data) != record.vectors_crc:
            return f"rows {record.start}..{stop} do not match their checksum"
        return None

    def _publish(self) -> None:
        assert self._log is not None
        stamp = (str(self._log.path), self._log.inode, self._log.size)
        self._view = self._rows.view(self._matrix, self.distance, self.exact_max_values, stamp)

    # -- writing ----------------------------------------------------------------------------

    def upsert(self, ids: list[str], vectors: NDArray[np.float32], payloads: msgspec.Raw) -> None:
        """Store checked points durably, then make them visible. ``vectors`` are
        ``(len(ids), dim)`` float32 (cosine: already normalised); ``payloads`` is the
        msgpack encoding of their payload list. Ids are distinct."""
        with self._write_lock.exclusive():
            with self._changing:
                record_log = self._refresh_for_writing()
                start = self._rows.used
                self._reserve(start + len(ids))
                data = np.ascontiguousarray(vectors, dtype="<f4")
                files.write_all_at(self._vectors_fd, data.data, start * self.dim * 4)
                sync_file(self._vectors_fd)
                record = Upserted(
                    start=start, ids=ids, payloads=payloads, vectors_crc=zlib.crc32(data.data)
                )
                record_log.append(encode(record))
                self._rows.upserted(start, ids, payloads, data)
                self._publish()
            self._compact_if_worth_it()

    def delete(self, ids: list[str]) -> int:
        """Remove points durably; how many existed."""
        with self._write_lock.exclusive():
            with self._changing:
                record_log = self._refresh_for_writing()
                present = [point_id for point_id in dict.fromkeys(ids) if point_id in self._rows]
                if not present:
                    return 0
                record_log.append(encode(Deleted(ids=present)))
                self._rows.deleted(present)
                self._publish()
            self._compact_if_worth_it()
        return len(present)

    def _reserve(self, rows: int) -> None:
        """Room for ``rows`` rows in the vectors file, growing it by doubling."""
        if rows <= len(self._matrix):
            return
        self._matrix = files.map_rows(self._vectors_fd, self.dim)  # grown by another process?
        if rows > len(self._matrix):
            capacity = max(rows, 2 * len(self._matrix), MIN_CAPACITY)
            os.ftruncate(self._vectors_fd, capacity * self.dim * 4)
            self._matrix = files.map_rows(self._vectors_fd, self.dim)

    # -- compaction -------------------------------------------------------------------------

    def _compact_if_worth_it(self) -> None:
        # Holding the write lock. A separate hold of _changing: a search that saw the
        # write just committed waits for it to be published, not for a compaction too.
        with self._changing:
            rows = self._rows
            if self._closed or rows.dead < _COMPACT_MIN_DEAD or rows.dead <= rows.used - rows.dead:
                return
            try:
                self._compact()
            except OSError as exc:
                # The data is safe in the current generation; compaction is tried again later.
                log.warning("collection %r: compaction failed, will retry: %s", self.name, exc)

    def _compact(self) -> None:
        """Copy the live rows into a new generation and switch the manifest to it."""
        generation = self._generation + 1
        live = self._rows.live()
        capacity = max(MIN_CAPACITY, len(live) + len(live) // 2)
        vectors = files.vectors_path(self.folder, generation)
        points = files.log_path(self.folder, generation)
        for stale in (vectors, points):
            stale.unlink(missing_ok=True)
        fd = os.open(vectors, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        new_log = None
        try:
            os.ftruncate(fd, capacity * self.dim * 4)
            bodies = []
            for first in range(0, len(live), _CHUNK):
                rows = live[first : first + _CHUNK]
                data = np.ascontiguousarray(self._matrix[rows])
                files.write_all_at(fd, data.data, first * self.dim * 4)
                record = Upserted(
                    start=first,
                    ids=[self._rows.ids[r] for r in rows],
                    payloads=msgspec.Raw(
                        msgspec.msgpack.encode([self._rows.payloads[r] for r in rows])
                    ),
                    vectors_crc=zlib.crc32(data.data),
                )
                bodies.append(encode(record))
            os.fsync(fd)
            new_log = RecordLog.open(points, RecordLog.create(points, bodies))
            matrix = files.map_rows(fd, self.dim)
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
            if new_log is not None:
                new_log.close()
            vectors.unlink(missing_ok=True)
            points.unlink(missing_ok=True)
            raise
        old_generation = self._generation
        self._close_files()
        self._vectors_fd, self._generation, self._log = fd, generation, new_log
        self._matrix = matrix
        self._rows = self._rows.compacted(capacity)
        self._publish()
        # Last: another process notices the compaction by the old log being gone.
        files.remove_strays(self.folder, generation)
        log.info(
            "collection %r: compacted generation %d into %d (%d live rows)",
            self.name,
            old_generation,
            generation,
            len(live),
        )

    # -- reading ----------------------------------------------------------------------------

    def count(self) -> int:
        return self.view().count

    def search(
        self, query: NDArray[np.float64], top_k: int, filter: dict[str, Any] | None
    ) -> list[Hit]:
        """The ``top_k`` best points for ``query`` (cosine: already normalised)."""
        return self.view().search(query, top_k, filter)

    # -- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the files (after a write in progress). Arrays stay readable for searches
        still holding a view."""
        with self._changing:
            self._closed = True
            self._close_files()
        # Outside _changing: a writer holding the lock may be waiting for it.
        self._write_lock.close()

    def _close_files(self) -> None:
        if self._vectors_fd >= 0:
            os.close(self._vectors_fd)
            self._vectors_fd = -1
        if self._log is not None:
            self._log.close()
            self._log = None
