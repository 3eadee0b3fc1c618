"""The wasmtime sandbox: one engine, and one fresh store and instance per call.

Engine settings: fuel metering and epoch interruption on (an epoch ticker thread makes
wall-clock deadlines), a small virtual memory reservation per linear memory (so
hundreds of concurrent instances fit in the address space), explicit store limits.

A call is a WASI command run: JSON input on stdin, stdout captured up to the output
limit, stderr's tail kept for the error message, argv = [plugin name], no environment
but the granted names, no pre-opened folder but the granted ones (read-only unless the
manifest says otherwise), and ENOSYS for the clocks and randomness unless granted.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import wasmtime
from noa.builtin_plugins.wasm.config import WasmConfig

__all__ = ["Grants", "Outcome", "Sandbox"]

_WASI = "wasi_snapshot_preview1"
_ENOSYS = 52  # WASI errno
_I32 = wasmtime.ValType.i32()
_I64 = wasmtime.ValType.i64()
# WASI preview 1 functions denied unless granted, with their signatures.
_CLOCK = {
    "clock_time_get": ([_I32, _I64, _I32], [_I32]),
    "clock_res_get": ([_I32, _I32], [_I32]),
    "poll_oneoff": ([_I32, _I32, _I32, _I32], [_I32]),
}
_RANDOM = {"random_get": ([_I32, _I32], [_I32])}
# Sockets are never granted (preview 1 can't open one, but a pre-opened one could be used).
_SOCKETS = {
    "sock_accept": ([_I32, _I32, _I32], [_I32]),
    "sock_recv": ([_I32, _I32, _I32, _I32, _I32, _I32], [_I32]),
    "sock_send": ([_I32, _I32, _I32, _I32, _I32], [_I32]),
    "sock_shutdown": ([_I32, _I32], [_I32]),
}


@dataclass(frozen=True, slots=True)
class Grants:
    """What one plugin's calls get (from its manifest, resolved)."""

    argv0: str
    dirs: tuple[tuple[str, str, bool], ...]  # (host, guest, read_only)
    env: tuple[tuple[str, str], ...]
    clock: bool
    random: bool
    memory_bytes: int
    fuel: int
    timeout_ms: int
    max_output_bytes: int


@dataclass(slots=True)
class Outcome:
    """What a call did: how it ended and what it wrote."""

    stdout: bytes
    stderr: bytes
    output_overflow: bool
    exit_code: int | None = None
    trap: wasmtime.Trap | wasmtime.WasmtimeError | None = None
    # Bytes of linear memory when it ended (None: no exported memory).
    memory_bytes: int | None = None


def _denied(results: int) -> Callable[..., int]:
    def deny(*_args: object) -> int:
        return _ENOSYS

    return deny


class Sandbox:
    """The engine and what every call shares (thread-safe)."""

    def __init__(self, config: WasmConfig) -> None:
        engine_config = wasmtime.Config()
        engine_config.consume_fuel = True
        engine_config.epoch_interruption = True
        engine_config.memory_reservation = config.memory_reservation_mib << 20
        engine_config.memory_reservation_for_growth = 1 << 20
        engine_config.memory_guard_size = 64 << 10
        engine_config.memory_may_move = True
        # Threads and shared memory would let state outlive the call's store.
        engine_config.wasm_threads = False
        self.engine = wasmtime.Engine(engine_config)
        self._tick_s = config.epoch_tick_ms / 1000
        self._tick_ms = config.epoch_tick_ms
        self._max_stderr = config.max_stderr_bytes
        self._linkers = threading.local()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        # Where each call's stdin is written (WASI reads stdin from a file): made at
        # start, removed at close.
        self._tmp: str | None = None

    def start(self) -> None:
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="noa-wasm-")
        if self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="noa-wasm-epoch", daemon=True)
            self._ticker.start()

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _tick(self) -> None:
        while not self._stop.wait(self._tick_s):
            self.engine.increment_epoch()

    def _linker(self, clock: bool, random: bool) -> wasmtime.Linker:
        # One linker per thread and grant set: Linker objects are not shared across
        # threads, and defining WASI for each call would cost more than the call.
        cache: dict[tuple[bool, bool], wasmtime.Linker] | None = getattr(
            self._linkers, "by_grants", None
        )
        if cache is None:
            cache = self._linkers.by_grants = {}
        linker = cache.get((clock, random))
        if linker is None:
            linker = wasmtime.Linker(self.engine)
            linker.define_wasi()
            linker.allow_shadowing = True
            denied = dict(_SOCKETS)
            if not clock:
                denied.update(_CLOCK)
            if not random:
                denied.update(_RANDOM)
            for name, (params, results) in denied.items():
                kind = wasmtime.FuncType(params, results)
                linker.define_func(_WASI, name, kind, _denied(len(results)))
            cache[(clock, random)] = linker
        return linker

    def run(self, module: wasmtime.Module, export: str, grants: Grants, stdin: bytes) -> Outcome:
        """Run ``export`` of a fresh instance of ``module``; never raises for what the
        module does (traps, exits, limits are in the Outcome)."""
        store = wasmtime.Store(self.engine)
        store.set_limits(
            memory_size=grants.memory_bytes, table_elements=100_000, instances=1, memories=1
        )
        store.set_fuel(grants.fuel)
        store.set_epoch_deadline(max(1, -(-grants.timeout_ms // self._tick_ms)))
        stdout = bytearray()
        stderr = bytearray()
        overflow = False

        def write_stdout(data: bytes) -> int:
            nonlocal overflow
            if len(stdout) + len(data) > grants.max_output_bytes:
                overflow = True
                return -errno.EFBIG
            stdout.extend(data)
            return len(data)

        def write_stderr(data: bytes) -> int:
            stderr.extend(data)
            if len(stderr) > self._max_stderr:
                del stderr[: len(stderr) - self._max_stderr]
            return len(data)

        if self._tmp is None:
            raise RuntimeError("the WASM sandbox is not started")
        fd, stdin_path = tempfile.mkstemp(dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as feed:
                feed.write(stdin)
            wasi = wasmtime.WasiConfig()
            wasi.argv = [grants.argv0]
            wasi.env = [list(pair) for pair in grants.env]
            wasi.stdin_file = stdin_path
            wasi.stdout_custom = write_stdout
            wasi.stderr_custom = write_stderr
            for host, guest, read_only in grants.dirs:
                wasi.preopen_dir(host, guest, fs_mutable=not read_only)
            store.set_wasi(wasi)
            outcome = Outcome(stdout=b"", stderr=b"", output_overflow=False)
            instance = None
            try:
                instance = self._linker(grants.clock, grants.random).instantiate(store, module)
                entry = instance.exports(store)[export]
                assert isinstance(entry, wasmtime.Func)
                entry(store)
                outcome.exit_code = 0
            except wasmtime.ExitTrap as exc:
                outcome.exit_code = exc.code
            except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
                outcome.trap = exc
            if instance is not None:
                memory = instance.exports(store).get("memory")
                if isinstance(memory, wasmtime.Memory):
                    outcome.memory_bytes = memory.data_len(store)
        finally:
            Path(stdin_path).unlink(missing_ok=True)
        outcome.stdout = bytes(stdout)
        outcome.stderr = bytes(stderr)
        outcome.output_overflow = overflow
        return outcome
