"""Locks that several processes sharing one store folder take on files: ``flock``.

A :class:`FileLock` keeps one file open and takes ``flock`` on it, blocking, so it is
only ever taken in a worker thread, never on the event loop. The kernel ties an
``flock`` to the open file description, not to the process or the thread, hence:

- two processes (or two descriptors in one process) exclude each other;
- two threads sharing one descriptor would **not**: the second would get the lock the
  first holds. So a :class:`FileLock` also holds a ``threading.Lock`` while it holds the
  ``flock``, and its threads take turns too, shared or exclusive. (The store's
  ``asyncio`` locks queue its tasks before they reach a thread; this keeps a thread
  whose task was cancelled, but which goes on running, from overlapping the next one.)
- a process that dies, even by ``SIGKILL``, releases what it held when the kernel
  closes its descriptors; no stale lock is left to clean up.

``flock`` works on local file systems; a store folder on a network file system is not
supported.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["FileLock"]


class FileLock:
    """An ``flock`` on ``path`` (created if missing), held through one descriptor."""

    __slots__ = ("_fd", "_threads", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self._threads = threading.Lock()

    @property
    def inode(self) -> int:
        """The lock file's inode. No other file can take it while this one is open here,
        so a file found at ``path`` with this inode is this one."""
        return os.fstat(self._fd).st_ino

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the lock alone, waiting for other holders."""
        with self._threads:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Hold the lock beside other processes' shared holders, waiting for an exclusive
        one (and for this process's other holders)."""
        with self._threads:
            fcntl.flock(self._fd, fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the file, once this process's holder (if any) is done."""
        with self._threads:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
