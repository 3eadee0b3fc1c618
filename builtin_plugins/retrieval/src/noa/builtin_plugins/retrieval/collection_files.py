"""The files of one collection folder, and the few file-system moves that keep them safe.

::

    <root>/<name>/manifest.json      format, dim, distance, fields, generation g
                  vectors-<g>.f32    float32 rows, row r at byte r * dim * 4
                  points-<g>.log     the record log (see record_log)
                  .write.lock        the collection's write lock (see file_locks)

``manifest.json`` is only ever replaced whole (written beside, synced, renamed, folder
synced), so it always names one complete generation. Files of any other generation are
what an interrupted compaction left behind, or what a compaction running in another
process is writing: :func:`remove_strays` deletes them, holding the write lock.
``.write.lock`` is never replaced, so it outlives compactions and tells this collection
from another made later under the same name.
"""

from __future__ import annotations

import mmap
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from noa.builtin_plugins.retrieval.file_locks import FileLock
from noa.builtin_plugins.retrieval.record_log import CorruptFile
from noa.plugin_sdk.ports.vectors import Distance, FieldType
from numpy.typing import NDArray

__all__ = [
    "FORMAT",
    "WRITE_LOCK",
    "Manifest",
    "drop_folder",
    "log_path",
    "map_rows",
    "read_manifest",
    "remove_strays",
    "strays",
    "sync_folder",
    "vectors_path",
    "write_all_at",
    "write_manifest",
]

FORMAT = 1
MANIFEST = "manifest.json"
WRITE_LOCK = ".write.lock"


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    format: int
    dim: int
    distance: Distance
    fields: dict[str, FieldType]
    generation: int


def vectors_path(folder: Path, generation: int) -> Path:
    return folder / f"vectors-{generation}.f32"


def log_path(folder: Path, generation: int) -> Path:
    return folder / f"points-{generation}.log"


def read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST
    try:
        manifest = msgspec.json.decode(path.read_bytes(), type=Manifest)
    except FileNotFoundError:
        raise CorruptFile(path, "missing: the folder is not a collection") from None
    except msgspec.DecodeError as exc:
        raise CorruptFile(path, f"unreadable ({exc})") from None
    if manifest.format != FORMAT:
        raise CorruptFile(
            path, f"format {manifest.format}; this version of the driver reads {FORMAT}"
        )
    return manifest


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Replace the manifest atomically: after a crash it is the old one or the new one."""
    temporary = folder / (MANIFEST + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all_at(fd, msgspec.json.encode(manifest), 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, folder / MANIFEST)
    sync_folder(folder)


def strays(folder: Path, generation: int) -> list[Path]:
    """The files of other generations and a half-written manifest."""
    keep = {
        MANIFEST,
        WRITE_LOCK,
        vectors_path(folder, generation).name,
        log_path(folder, generation).name,
    }
    return [entry for entry in folder.iterdir() if entry.name not in keep and entry.is_file()]


def remove_strays(folder: Path, generation: int) -> None:
    """Delete :func:`strays`; only the holder of the write lock may."""
    for entry in strays(folder, generation):
        entry.unlink(missing_ok=True)


def drop_folder(root: Path, folder: Path) -> None:
    """Delete a collection folder (holding the store's catalog lock): wait for a write in
    progress, then rename it away, so a crash never leaves half of it under its name,
    and delete it."""
    lock = FileLock(folder / WRITE_LOCK)
    try:
        with lock.exclusive():
            doomed = root / f".deleting-{folder.name}-{uuid.uuid4().hex}"
            os.rename(folder, doomed)
            sync_folder(root)
    finally:
        lock.close()
    shutil.rmtree(doomed, ignore_errors=True)


def sync_folder(folder: Path) -> None:
    """Make renames and new files in ``folder`` durable (a no-op where folders can't be
    opened, as on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def map_rows(fd: int, dim: int) -> NDArray[np.float32]:
    """The vectors file as a read-only ``(capacity, dim)`` float32 array; writes, by this
    process or another, go through :func:`write_all_at`, which the shared page cache
    makes visible here."""
    capacity = os.fstat(fd).st_size // (dim * 4)
    if capacity == 0:
        return np.empty((0, dim), dtype=np.float32)
    mapped: Any = mmap.mmap(fd, capacity * dim * 4, access=mmap.ACCESS_READ)
    # The array keeps the mapping alive; it is never closed by hand, so a search still
    # reading an older, smaller mapping is safe while the file grows or is replaced.
    return np.frombuffer(mapped, dtype="<f4").reshape(capacity, dim)


def write_all_at(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
