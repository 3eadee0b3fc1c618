"""The append-only record log of a collection: what was upserted and deleted, in order.

File layout: the 8-byte magic ``NOAVLOG1``, then records. A record is an 8-byte header
(little-endian ``u32`` body length, ``u32`` CRC-32 of the body) and a msgpack body, one
of :class:`Upserted` or :class:`Deleted`. Each append is one ``write`` followed by
``fdatasync``: a record is acknowledged only once it is on disk. Only the holder of the
collection's write lock appends; any process may read.

Reading (:meth:`RecordLog.read_new`) goes on from the last whole record already read and
stops at the first record that is not whole and valid. Appends are sequential and
synced one by one, so only the **last** record can be incomplete (a bad record that
reaches the end of the file, or is followed by nothing but zero bytes): because another
process is writing it right now, or because a crash tore it. A reader can't tell which
and leaves it alone; only the holder of the write lock, knowing no one else writes, cuts
it off. A bad record with valid-looking data after it is damage, not a crash; that
raises :class:`CorruptFile` naming the file and the byte offset rather than silently
losing what came after.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import msgspec

__all__ = ["START", "CorruptFile", "Deleted", "Record", "RecordLog", "Upserted", "sync_file"]

MAGIC = b"NOAVLOG1"
# Where the first record starts.
START = len(MAGIC)
_HEADER = struct.Struct("<II")
# A body larger than this is a damaged length field, not a record this driver wrote.
_MAX_BODY = 1 << 31

# fdatasync where the platform has it (it skips metadata a reader doesn't need).
sync_file = getattr(os, "fdatasync", os.fsync)


class CorruptFile(Exception):
    """A file of a collection is damaged in a way a crash cannot explain."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        super().__init__(f"{path}: {reason}")


class Upserted(msgspec.Struct, frozen=True, tag="u", array_like=True):
    """Rows ``start .. start + len(ids)`` of the vectors file hold these points; an id
    stored before now lives in its new row."""

    start: int
    ids: list[str]
    # The msgpack encoding of the list of payloads, one per id: encoded (and checked)
    # once, before the writer lock is taken.
    payloads: msgspec.Raw
    # CRC-32 of the rows' bytes, so a vectors file damaged after the fact is noticed.
    vectors_crc: int


class Deleted(msgspec.Struct, frozen=True, tag="d", array_like=True):
    """These ids were removed."""

    ids: list[str]


Record = Upserted | Deleted

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Record] = msgspec.msgpack.Decoder(Record)


def encode(record: Record) -> bytes:
    """The record's body (raises ``TypeError``/``msgspec.EncodeError`` on a payload
    msgpack cannot hold)."""
    return _encoder.encode(record)


def decode(body: bytes | memoryview) -> Record:
    return _decoder.decode(body)


class RecordLog:
    """One open log file. ``size`` is where the records this process has taken in end
    (a record boundary): reading goes on from there, and the holder of the write lock
    appends there once it has read everything before."""

    __slots__ = ("_fd", "_last", "_read", "inode", "path", "size")

    def __init__(self, path: Path, fd: int, size: int) -> None:
        self.path = path
        self._fd = fd
        self.size = size
        # No other file takes this inode while this one is open here: a file found at
        # ``path`` with it is this one.
        self.inode = os.fstat(fd).st_ino
        # The offset and header of the record that ends at ``size`` (None: no record,
        # or the end of a compacted snapshot, which no writer cuts back), and of the
        # last two records read.
        self._last: tuple[int, bytes] | None = None
        self._read: list[tuple[int, bytes]] = []

    @classmethod
    def create(cls, path: Path, bodies: list[bytes]) -> int:
        """Write a new log holding ``bodies`` and sync it (the caller syncs the folder);
        its size."""
        data = MAGIC + b"".join(_framed(body) for body in bodies)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_all_at(fd, data, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        return len(data)

    @classmethod
    def open(cls, path: Path, size: int = START) -> RecordLog:
        """Open a log whose records up to byte ``size`` are already taken in (by default
        none); nothing else is read yet."""
        fd = os.open(path, os.O_RDWR)
        try:
            if os.pread(fd, len(MAGIC), 0) != MAGIC:
                raise CorruptFile(path, "not a record log of the embedded vector store (bad magic)")
            return cls(path, fd, size)
        except BaseException:
            os.close(fd)
            raise

    def read_new(self) -> tuple[list[tuple[int, Record]], int, int]:
        """The whole records past ``size`` with their byte offsets, the end of the last of
        them, and the file's size now: bytes between the two are an incomplete record
        (being written, or torn). The caller then moves ``size`` on with
        :meth:`advance`.

        Raises :class:`CorruptFile` when the last record taken in is no longer there,
        as when its writer's sync failed and it cut the record back (then, maybe,
        appended another): the caller reads the log again from the start."""
        if self._last is not None:
            offset, header = self._last
            if os.pread(self._fd, len(header), offset) != header:
                raise CorruptFile(self.path, f"the record at byte {offset} changed once read")
        length = os.fstat(self._fd).st_size
        if length < self.size:
            raise CorruptFile(self.path, f"{length} bytes long, {self.size} were read")
        self._read = []
        if length == self.size:
            return [], self.size, length
        data = _read_range(self._fd, self.size, length)
        records, headers, end = _parse(self.path, data, self.size)
        self._read = headers[-2:]
        return records, end, self.size + len(data)

    def advance(self, end: int) -> None:
        """Take in the records read up to ``end``, the end of one of the last two."""
        for offset, header in self._read:
            if offset + len(header) + _HEADER.unpack(header)[0] == end:
                self._last = offset, header
        self.size = end

    def append(self, body: bytes) -> None:
        """Append one record at ``size`` and sync it. On failure the file is cut back to
        ``size``, so the next append starts on a record boundary."""
        try:
            framed = _framed(body)
            _write_all_at(self._fd, framed, self.size)
            sync_file(self._fd)
        except BaseException:
            self.truncate(self.size)
            raise
        self._last = self.size, framed[: _HEADER.size]
        self.size += len(framed)

    def truncate(self, size: int) -> None:
        """Cut the log back to ``size`` bytes (a record boundary); only the holder of the
        write lock does."""
        os.ftruncate(self._fd, size)
        os.fsync(self._fd)
        self.size = size

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _framed(body: bytes) -> bytes:
    return _HEADER.pack(len(body), zlib.crc32(body)) + body


def _parse(
    path: Path, data: bytes, base: int
) -> tuple[list[tuple[int, Record]], list[tuple[int, bytes]], int]:
    """The whole records in ``data`` (which starts at byte ``base`` of the file, on a
    record boundary) with their offsets, their headers, and where the last one ends."""
    records: list[tuple[int, Record]] = []
    headers: list[tuple[int, bytes]] = []
    pos = 0
    view = memoryview(data)
    while pos < len(data):
        problem = None
        if len(data) - pos < _HEADER.size:
            problem = "a header cut short"
            end = len(data)
        else:
            length, crc = _HEADER.unpack_from(data, pos)
            end = pos + _HEADER.size + length
            body = view[pos + _HEADER.size : end]
            if length == 0 or length > _MAX_BODY or end > len(data):
                problem = f"an impossible length {length}"
            elif zlib.crc32(body) != crc:
                problem = "a checksum mismatch"
            else:
                try:
                    records.append((base + pos, decode(body)))
                    headers.append((base + pos, data[pos : pos + _HEADER.size]))
                except msgspec.DecodeError as exc:
                    problem = f"an undecodable body ({exc})"
        if problem is None:
            pos = end
            continue
        if end >= len(data) or not any(view[end:]):
            break  # the last record, incomplete
        raise CorruptFile(path, f"damaged record at byte {base + pos}: {problem}")
    return records, headers, base + pos


def _read_range(fd: int, start: int, stop: int) -> bytes:
    chunks = []
    offset = start
    while offset < stop:
        chunk = os.pread(fd, min(stop - offset, 1 << 26), offset)
        if not chunk:
            break  # cut short meanwhile: by the writer repairing a torn record
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _write_all_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
