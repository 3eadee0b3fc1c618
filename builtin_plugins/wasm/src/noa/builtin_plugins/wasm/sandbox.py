"""The wasmtime sandbox: one engine, linkers shared by every call, and one fresh store
and instance per call.

Engine settings: fuel metering and epoch interruption on (an epoch ticker thread makes
wall-clock deadlines), a small virtual memory reservation per linear memory (so
hundreds of concurrent instances fit in the address space), explicit store limits.

A call is a WASI command run: JSON input on stdin, stdout captured up to the output
limit, stderr's tail kept for the error message, argv = [plugin name], no environment
but the granted names, no pre-opened folder but the granted ones (read-only unless the
manifest says otherwise), and ENOSYS for the clocks and randomness unless granted.

Where the per-call time goes, and why the code looks the way it does:

- A plugin is linked once (:meth:`Sandbox.prepare`, an ``InstancePre``); a call only
  makes a store, a ``WasiConfig`` and the instance.
- stdin is handed to WASI as bytes (``wasi_config_set_stdin_bytes``, part of
  wasmtime's C API that wasmtime-py binds but does not wrap): no temporary file.
- stdout and stderr (fds 1 and 2) are served by our own ``fd_write``, which copies
  the guest's buffers into the call's bytearrays on the calling thread (wasmtime's
  custom output streams call Python from a tokio worker thread instead: a thread hop
  per write, ~170 µs a call). A WASI function called from the host has no caller
  instance, so this ``fd_write`` can't pass other fds on to WASI's: it answers EBADF
  for them, which is what WASI answers too unless a folder is writable. A plugin
  granted a writable folder keeps WASI's ``fd_write`` and the custom streams.
"""

from __future__ import annotations

import ctypes
import errno
import struct
import threading
from dataclasses import dataclass, field

import wasmtime
from noa.builtin_plugins.wasm.config import WasmConfig
from wasmtime import _ffi as wasmtime_c  # the C API's bindings (stdin as bytes)

__all__ = ["Grants", "Outcome", "Sandbox"]

_WASI = "wasi_snapshot_preview1"
# WASI preview 1 errno values.
_EBADF, _EFAULT, _EFBIG, _EINVAL, _ENOSYS = 8, 21, 22, 28, 52
_IOV_MAX = 1024
_I32 = wasmtime.ValType.i32()
_I64 = wasmtime.ValType.i64()
_FD_WRITE = ([_I32, _I32, _I32, _I32], [_I32])
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

    @property
    def writable(self) -> bool:
        """Whether a pre-opened folder is writable (WASI then serves every fd_write)."""
        return any(not read_only for _, _, read_only in self.dirs)


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


@dataclass(slots=True)
class _Streams:
    """stdout and stderr of the call running on one thread."""

    max_output: int
    max_stderr: int
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    overflow: bool = False

    # The custom output streams of WASI (plugins granted a writable folder).
    def write_stdout(self, data: bytes) -> int:
        if len(self.stdout) + len(data) > self.max_output:
            self.overflow = True
            return -errno.EFBIG
        self.stdout.extend(data)
        return len(data)

    def write_stderr(self, data: bytes) -> int:
        self.stderr.extend(data)
        if len(self.stderr) > self.max_stderr:
            del self.stderr[: len(self.stderr) - self.max_stderr]
        return len(data)


def _deny(*_args: object) -> int:
    return _ENOSYS


def _stdin_bytes(wasi: wasmtime.WasiConfig, data: bytes) -> None:
    """Make ``data`` the guest's stdin (the config takes the vector's ownership)."""
    vec = wasmtime_c.wasm_byte_vec_t()
    buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    wasmtime_c.wasm_byte_vec_new(ctypes.byref(vec), len(data), buffer)
    wasmtime_c.wasi_config_set_stdin_bytes(wasi.ptr(), ctypes.byref(vec))


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
        # The streams of the call each thread is running (read by _fd_write).
        self._running = threading.local()
        self._linkers: dict[tuple[bool, bool, bool], wasmtime.Linker] = {}
        self._linkers_lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def start(self) -> None:
        if self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="noa-wasm-epoch", daemon=True)
            self._ticker.start()

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None

    def _tick(self) -> None:
        while not self._stop.wait(self._tick_s):
            self.engine.increment_epoch()

    def _linker(self, clock: bool, random: bool, own_stdio: bool) -> wasmtime.Linker:
        """The linker of one grant set: WASI, our fd_write unless a folder is writable,
        ENOSYS for what is denied."""
        key = (clock, random, own_stdio)
        with self._linkers_lock:
            linker = self._linkers.get(key)
            if linker is None:
                linker = wasmtime.Linker(self.engine)
                linker.define_wasi()
                linker.allow_shadowing = True
                if own_stdio:
                    kind = wasmtime.FuncType(*_FD_WRITE)
                    linker.define_func(_WASI, "fd_write", kind, self._fd_write, access_caller=True)
                denied = dict(_SOCKETS)
                if not clock:
                    denied.update(_CLOCK)
                if not random:
                    denied.update(_RANDOM)
                for name, (params, results) in denied.items():
                    linker.define_func(_WASI, name, wasmtime.FuncType(params, results), _deny)
                self._linkers[key] = linker
            return linker

    def prepare(self, module: wasmtime.Module, grants: Grants) -> wasmtime.InstancePre:
        """``module`` linked against what ``grants`` allow, ready to instantiate per call.
        Raises wasmtime.WasmtimeError when an import can't be satisfied."""
        linker = self._linker(grants.clock, grants.random, own_stdio=not grants.writable)
        return linker.instantiate_pre(module)

    def run(
        self, prepared: wasmtime.InstancePre, export: str, grants: Grants, stdin: bytes
    ) -> Outcome:
        """Run ``export`` of a fresh instance of ``prepared``; never raises for what the
        module does (traps, exits, limits are in the Outcome)."""
        store = wasmtime.Store(self.engine)
        store.set_limits(
            memory_size=grants.memory_bytes, table_elements=100_000, instances=1, memories=1
        )
        store.set_fuel(grants.fuel)
        store.set_epoch_deadline(max(1, -(-grants.timeout_ms // self._tick_ms)))
        wasi = wasmtime.WasiConfig()
        wasi.argv = [grants.argv0]
        if grants.env:
            wasi.env = [list(pair) for pair in grants.env]
        _stdin_bytes(wasi, stdin)
        for host, guest, read_only in grants.dirs:
            wasi.preopen_dir(host, guest, fs_mutable=not read_only)
        streams = _Streams(max_output=grants.max_output_bytes, max_stderr=self._max_stderr)
        if grants.writable:
            wasi.stdout_custom = streams.write_stdout
            wasi.stderr_custom = streams.write_stderr
        store.set_wasi(wasi)
        outcome = Outcome(stdout=b"", stderr=b"", output_overflow=False)
        instance = None
        self._running.streams = streams
        try:
            instance = prepared.instantiate(store)
            entry = instance.exports(store)[export]
            assert isinstance(entry, wasmtime.Func)
            entry(store)
            outcome.exit_code = 0
        except wasmtime.ExitTrap as exc:
            outcome.exit_code = exc.code
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            outcome.trap = exc
        finally:
            self._running.streams = None
        if instance is not None:
            memory = instance.exports(store).get("memory")
            if isinstance(memory, wasmtime.Memory):
                outcome.memory_bytes = memory.data_len(store)
        outcome.stdout = bytes(streams.stdout)
        outcome.stderr = bytes(streams.stderr)
        outcome.output_overflow = streams.overflow
        return outcome

    def _fd_write(
        self, caller: wasmtime.Caller, fd: int, iovs: int, count: int, written: int
    ) -> int:
        """WASI ``fd_write`` for plugins with no writable folder: fds 1 and 2 into the
        running call's streams, EBADF for any other. Never raises: a Python exception
        here would become a trap whose cause wasmtime-py keeps in a process-wide
        variable, where another thread's call could pick it up."""
        streams: _Streams | None = getattr(self._running, "streams", None)
        if fd not in (1, 2) or streams is None:
            return _EBADF
        # i32 arguments arrive signed; guest addresses and counts are unsigned.
        iovs, count, written = iovs & 0xFFFFFFFF, count & 0xFFFFFFFF, written & 0xFFFFFFFF
        memory = caller.get("memory")
        if not isinstance(memory, wasmtime.Memory):
            return _EFAULT
        if count > _IOV_MAX:
            return _EINVAL
        size = memory.data_len(caller)
        if iovs + 8 * count > size or written + 4 > size:
            return _EFAULT
        base = ctypes.addressof(memory.data_ptr(caller).contents)
        buffers = list(struct.iter_unpack("<II", ctypes.string_at(base + iovs, 8 * count)))
        total = 0
        for pointer, length in buffers:
            if pointer + length > size:
                return _EFAULT
            total += length
        if fd == 1:
            if len(streams.stdout) + total > streams.max_output:
                streams.overflow = True
                return _EFBIG
            out = streams.stdout
        else:
            out = streams.stderr
        for pointer, length in buffers:
            out.extend(ctypes.string_at(base + pointer, length))
        if fd == 2 and len(out) > streams.max_stderr:
            del out[: len(out) - streams.max_stderr]
        struct.pack_into("<I", (ctypes.c_char * 4).from_address(base + written), 0, total)
        return 0
