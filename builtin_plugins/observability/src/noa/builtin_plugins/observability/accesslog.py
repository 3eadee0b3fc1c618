"""The access log: one JSON line per HTTP request, written without structlog's chain.

It is the one log line every request pays for, so it is encoded straight to bytes with
msgspec and written to a buffer that is flushed at most every ``FLUSH_S`` seconds
(one system call per batch instead of one per request). The line has the same fields
and format as structlog's JSON lines (``event``, ``level``, ``timestamp``, ``logger``).
In console format the access log goes through structlog like everything else.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime
from typing import Any, BinaryIO

import msgspec

__all__ = ["JsonAccessLog", "StructlogAccessLog"]

FLUSH_S = 0.05


class JsonAccessLog:
    __slots__ = ("_buffer", "_encoder", "_flush_pending", "_prefix", "_second", "_stream")

    def __init__(self, stream: BinaryIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr.buffer
        self._encoder = msgspec.json.Encoder()
        self._buffer = bytearray()
        self._flush_pending = False
        self._second = -1
        self._prefix = ""

    def request(self, fields: dict[str, Any]) -> None:
        fields["event"] = "request"
        fields["level"] = "info"
        fields["logger"] = "noa.access"
        fields["timestamp"] = self._timestamp()
        self._encoder.encode_into(fields, self._buffer, -1)
        self._buffer += b"\n"
        if not self._flush_pending:
            self._flush_pending = True
            try:
                asyncio.get_running_loop().call_later(FLUSH_S, self.flush)
            except RuntimeError:  # no loop: write at once
                self.flush()

    def _timestamp(self) -> str:
        # The date-time part changes once a second: format it once a second.
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"

    def flush(self) -> None:
        self._flush_pending = False
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            self._stream.write(data)
            self._stream.flush()


class StructlogAccessLog:
    """Console format: through structlog, for people reading a terminal."""

    __slots__ = ("_log",)

    def __init__(self, log: Any) -> None:
        self._log = log

    def request(self, fields: dict[str, Any]) -> None:
        self._log.info("request", **fields)

    def flush(self) -> None:
        return None
