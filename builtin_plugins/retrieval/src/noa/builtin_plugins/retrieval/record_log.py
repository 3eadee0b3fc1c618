"""The append-only record log of a collection: what was upserted and deleted, in order.

File layout: the 8-byte magic ``NOAVLOG1``, then records. A record is an 8-byte header
(little-endian ``u32`` body length, ``u32`` CRC-32 of the body) and a msgpack body, one
of :class:`Upserted` or :class:`Deleted`. Each append is one ``write`` followed by
``fdatasync``: a record is acknowledged only once it is on disk.

Reading stops at the first record that is not whole and valid. A crash can only tear
the **last** record (appends are sequential and synced one by one), so a bad record
that reaches the end of the file, or is followed by nothing but zero bytes, is a torn
write: it is dropped (the caller truncates it away) and the state before it is served.
A bad record with valid-looking data after it is damage, not a crash; that raises
:class:`CorruptFile` naming the file and the byte offset rather than silently losing
what came after.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import msgspec

__all__ = ["CorruptFile", "Deleted", "Record", "RecordLog", "Upserted", "sync_file"]

MAGIC = b"NOAVLOG1"
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
    """One open log file, positioned at its end for appending."""

    __slots__ = ("_fd", "path", "size")

    def __init__(self, path: Path, fd: int, size: int) -> None:
        self.path = path
        self._fd = fd
        self.size = size

    @classmethod
    def create(cls, path: Path, bodies: list[bytes]) -> None:
        """Write a new log holding ``bodies`` and sync it (the caller syncs the folder)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_all(fd, MAGIC + b"".join(_framed(body) for body in bodies))
            os.fsync(fd)
        finally:
            os.close(fd)

    @classmethod
    def open(cls, path: Path) -> tuple[RecordLog, list[tuple[int, Record]], str | None]:
        """Open for appending: the log, its whole records with their byte offsets, and a
        note when a torn last record was cut off."""
        fd = os.open(path, os.O_RDWR)
        try:
            data = _read_all(fd)
            records, end, torn = _parse(path, data)
            note = None
            if torn:
                note = (
                    f"{path}: cut off a torn record at byte {end} ({len(data) - end} bytes): "
                    "the write a crash interrupted, never acknowledged"
                )
                os.ftruncate(fd, end)
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, end), records, note

    def append(self, body: bytes) -> None:
        """Append one record and sync it. On failure the file is cut back to where it
        was, so the next append starts on a record boundary."""
        try:
            os.lseek(self._fd, self.size, os.SEEK_SET)
            framed = _framed(body)
            _write_all(self._fd, framed)
            sync_file(self._fd)
        except BaseException:
            self.truncate(self.size)
            raise
        self.size += len(framed)

    def truncate(self, size: int) -> None:
        """Cut the log back to ``size`` bytes (a record boundary)."""
        os.ftruncate(self._fd, size)
        os.fsync(self._fd)
        self.size = size

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _framed(body: bytes) -> bytes:
    return _HEADER.pack(len(body), zlib.crc32(body)) + body


def _parse(path: Path, data: bytes) -> tuple[list[tuple[int, Record]], int, bool]:
    if data[: len(MAGIC)] != MAGIC:
        raise CorruptFile(path, "not a record log of the embedded vector store (bad magic)")
    records: list[tuple[int, Record]] = []
    pos = len(MAGIC)
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
                    records.append((pos, decode(body)))
                except msgspec.DecodeError as exc:
                    problem = f"an undecodable body ({exc})"
        if problem is None:
            pos = end
            continue
        if end >= len(data) or not any(view[end:]):
            return records, pos, True
        raise CorruptFile(path, f"damaged record at byte {pos}: {problem}")
    return records, pos, False


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(size - offset, 1 << 26), offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
