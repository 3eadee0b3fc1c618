"""The compiled-module cache: wasmtime serializations, signed with HMAC-SHA256.

Deserializing a compiled module is as trusted as running native code, so only this
server's own cache is ever deserialized, and only after its tag checks out. A file is
``<sha256 of the module bytes>-<wasmtime version>.cwasm``: 32 bytes of tag, then the
serialization. A file whose tag fails, or that this engine refuses, is deleted and the
module compiled again.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from importlib.metadata import version
from pathlib import Path

import wasmtime

__all__ = ["ModuleCache", "load_or_make_key"]

log = logging.getLogger(__name__)
_TAG = 32


def load_or_make_key(path: Path) -> bytes:
    """The key kept at ``path``, made (32 random bytes, mode 0600) on first use."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker made it first
        return path.read_bytes()
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return key


class ModuleCache:
    """Compiles modules through a signed on-disk cache."""

    __slots__ = ("_dir", "_engine", "_key", "_version", "hits", "misses")

    def __init__(self, engine: wasmtime.Engine, folder: Path, key: bytes) -> None:
        self._engine = engine
        self._dir = folder
        self._key = key
        self._version = version("wasmtime")
        self.hits = 0
        self.misses = 0

    def path_for(self, wasm: bytes) -> Path:
        return self._dir / f"{hashlib.sha256(wasm).hexdigest()}-{self._version}.cwasm"

    def _tag(self, path: Path, artifact: bytes) -> bytes:
        return hmac.new(self._key, path.name.encode() + b"\0" + artifact, "sha256").digest()

    def module(self, wasm: bytes) -> wasmtime.Module:
        """The compiled module of ``wasm`` (WASM binary bytes), from the cache when its
        entry is genuine. Raises wasmtime.WasmtimeError when ``wasm`` does not compile."""
        path = self.path_for(wasm)
        cached = self._read(path)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        module = wasmtime.Module(self._engine, wasm)
        self._write(path, bytes(module.serialize()))
        return module

    def _read(self, path: Path) -> wasmtime.Module | None:
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        tag, artifact = blob[:_TAG], blob[_TAG:]
        if len(tag) != _TAG or not hmac.compare_digest(tag, self._tag(path, artifact)):
            log.warning("wasm cache: %s fails its HMAC; deleted, recompiling", path.name)
            path.unlink(missing_ok=True)
            return None
        try:
            return wasmtime.Module.deserialize(self._engine, artifact)
        except wasmtime.WasmtimeError as exc:  # made by an engine with other settings
            log.info("wasm cache: %s no longer fits the engine (%s); recompiling", path.name, exc)
            path.unlink(missing_ok=True)
            return None

    def _write(self, path: Path, artifact: bytes) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
        partial.write_bytes(self._tag(path, artifact) + artifact)
        os.replace(partial, path)
