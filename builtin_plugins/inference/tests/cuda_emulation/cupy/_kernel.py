"""``RawModule`` and ``RawKernel`` of the CPU emulator: launches, checked as they go.

A launch is refused (``TypeError`` or ``ValueError``) unless it would be a correct CUDA
launch of that kernel, checked more strictly than CuPy does:

- the grid and block are within CUDA's limits and the dynamic shared memory within the
  48 KiB a block may have without opting in;
- there is one argument per kernel parameter; a pointer parameter gets a C-contiguous
  device array of exactly its element type (CuPy passes any array's pointer, so a
  strided or mistyped array would be misread silently on a GPU); a scalar parameter
  gets a NumPy scalar of exactly its type (``numpy.int32`` for ``int``): a Python
  number or a wider NumPy scalar does not reach a GPU kernel as the type it declares.

After the launch, :class:`EmulatedLaunchError` reports a barrier reached by part of a
block, a write past the block's dynamic shared memory (both from the runtime), and any
change to memory outside the arrays the kernel may write: its non-``const`` pointer
arguments (a write past an array, or into a read-only input through a cast).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ._array import Allocation, ndarray
from ._translate import Param, compile_kernels, parse_kernels

__all__ = ["LAUNCHES", "EmulatedLaunchError", "Launch", "RawKernel", "RawModule", "schedule"]

MAX_THREADS = 1024
MAX_BLOCK = (1024, 1024, 64)
MAX_GRID = (2**31 - 1, 65535, 65535)
SHARED_LIMIT = 48 * 1024
SCHEDULES = ("ascending", "descending")

_CTYPES: dict[str, Any] = {
    "float": ctypes.c_float,
    "double": ctypes.c_double,
    "int": ctypes.c_int32,
    "unsigned int": ctypes.c_uint32,
    "unsigned": ctypes.c_uint32,
    "long long": ctypes.c_int64,
    "long long int": ctypes.c_int64,
    "unsigned long long": ctypes.c_uint64,
}


class EmulatedLaunchError(RuntimeError):
    """A kernel did what is wrong on a GPU (the message says what, and where)."""


@dataclasses.dataclass(frozen=True)
class Launch:
    """One launch, as recorded in :data:`LAUNCHES`."""

    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_mem: int


#: Every launch of this process, oldest first (tests read which kernels ran).
LAUNCHES: list[Launch] = []
_schedule = {"current": "ascending"}
# The runtime keeps a launch's state in globals: one launch at a time per process.
_LAUNCH_LOCK = threading.Lock()


@contextlib.contextmanager
def schedule(name: str) -> Iterator[None]:
    """Run launches in this order (``ascending`` or ``descending``) inside the block."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {name!r}")
    before, _schedule["current"] = _schedule["current"], name
    try:
        yield
    finally:
        _schedule["current"] = before


def _dims(kernel: str, what: str, value: Any, limits: tuple[int, int, int]) -> tuple[int, int, int]:
    if not isinstance(value, tuple) or not 1 <= len(value) <= 3:
        raise TypeError(f"{kernel}: {what} must be a tuple of 1 to 3 ints, got {value!r}")
    dims = []
    for n, limit in zip(value, limits, strict=False):
        if not isinstance(n, int | np.integer) or isinstance(n, bool):
            raise TypeError(f"{kernel}: {what} {value!r} holds a {type(n).__name__}")
        if not 0 < int(n) <= limit:
            raise ValueError(
                f"{kernel}: {what} {value!r} is outside 1..{limit} "
                "(cudaErrorInvalidConfiguration on a GPU)"
            )
        dims.append(int(n))
    dims += [1] * (3 - len(dims))
    return dims[0], dims[1], dims[2]


def _argument(kernel: str, param: Param, value: Any) -> Any:
    """The C value of one argument; TypeError or ValueError for one a GPU would misread."""
    where = f"{kernel}: argument {param.name!r} ({param})"
    want = np.dtype(param.numpy_type)
    if param.pointer:
        if not isinstance(value, ndarray):
            raise TypeError(f"{where} needs a device array, got {type(value).__name__}")
        if value.dtype != want:
            raise TypeError(f"{where} needs {want} elements, got a {value.dtype} array")
        if not value.flags.c_contiguous:
            raise ValueError(
                f"{where} got a non-contiguous array {value.shape}: a kernel indexes raw "
                "memory, so it would read the wrong elements"
            )
        return value._data.ctypes.data
    if type(value) is not param.numpy_type:
        raise TypeError(
            f"{where} needs numpy.{want.name}, got {type(value).__name__}: any other "
            f"scalar reaches the kernel with another size or format than {param.ctype}"
        )
    return value.item()


class _Watch:
    """The allocations a launch touches, to find writes outside its writable arrays."""

    def __init__(self, params: Sequence[Param], args: Sequence[Any]) -> None:
        self.entries: dict[int, tuple[Allocation, Any, list[tuple[int, int]], str]] = {}
        for param, value in zip(params, args, strict=True):
            if not param.pointer:
                continue
            allocation = value._allocation
            key = id(allocation)
            if key not in self.entries:
                self.entries[key] = (allocation, allocation.snapshot(), [], param.name)
            if not param.const:
                start = allocation.offset_of(value._data)
                self.entries[key][2].append((start, start + value.nbytes))

    def check(self, kernel: str) -> None:
        for allocation, before, spans, name in self.entries.values():
            at = allocation.changed_outside(before, spans)
            if at is not None:
                place = f"{-at} bytes before its start" if at < 0 else f"at byte {at}"
                if at >= allocation.nbytes:
                    place = f"at byte {at}, past its end ({allocation.nbytes} bytes)"
                raise EmulatedLaunchError(
                    f"{kernel} wrote outside the arrays it may write: the memory of argument "
                    f"{name!r} changed {place} (an out-of-bounds write, or a write through "
                    "a const input)"
                )


class RawKernel:
    """One compiled kernel; call it as CuPy's: ``kernel(grid, block, args, shared_mem=0)``."""

    def __init__(self, library: ctypes.CDLL, name: str, params: tuple[Param, ...]) -> None:
        self.name = name
        self.params = params
        self.max_dynamic_shared_size_bytes = SHARED_LIMIT
        self._error = library.noa_emu_error
        self._error.restype = ctypes.c_char_p
        self._launch = getattr(library, f"noa_emu_launch_{name}")
        self._launch.restype = ctypes.c_int
        self._launch.argtypes = [
            *[ctypes.c_uint] * 6,
            ctypes.c_ulong,
            ctypes.c_int,
            *[ctypes.c_void_p if p.pointer else _CTYPES[p.ctype] for p in params],
        ]

    def __call__(
        self, grid: Any, block: Any, args: Any, *, shared_mem: int = 0, stream: Any = None
    ) -> None:
        name = self.name
        grid3 = _dims(name, "grid", grid, MAX_GRID)
        block3 = _dims(name, "block", block, MAX_BLOCK)
        if block3[0] * block3[1] * block3[2] > MAX_THREADS:
            raise ValueError(f"{name}: block {block!r} has more than {MAX_THREADS} threads")
        if not isinstance(shared_mem, int) or shared_mem < 0:
            raise TypeError(f"{name}: shared_mem must be an int >= 0, got {shared_mem!r}")
        if shared_mem > self.max_dynamic_shared_size_bytes:
            raise ValueError(
                f"{name}: {shared_mem} bytes of dynamic shared memory, over the "
                f"{self.max_dynamic_shared_size_bytes} a block may have"
            )
        if not isinstance(args, tuple | list) or len(args) != len(self.params):
            count = len(args) if isinstance(args, tuple | list) else args
            raise TypeError(
                f"{name} takes {len(self.params)} arguments "
                f"({', '.join(map(str, self.params))}), got {count}"
            )
        values = [_argument(name, p, a) for p, a in zip(self.params, args, strict=True)]
        descending = int(_schedule["current"] == "descending")
        with _LAUNCH_LOCK:
            watch = _Watch(self.params, args)
            LAUNCHES.append(Launch(name, grid3, block3, shared_mem))
            if self._launch(*grid3, *block3, shared_mem, descending, *values):
                message = (self._error() or b"failed").decode()
                raise EmulatedLaunchError(f"{name} {message}")
            watch.check(name)


class RawModule:
    """CuPy's ``RawModule(code=...)``: every ``extern "C" __global__`` kernel of ``code``."""

    def __init__(self, code: str, options: tuple[str, ...] = (), **_: Any) -> None:
        self.code = code
        self.kernels = parse_kernels(code)
        self._library = compile_kernels(code, self.kernels)

    def get_function(self, name: str) -> RawKernel:
        if name not in self.kernels:
            raise KeyError(f'no extern "C" __global__ kernel {name!r} in the module')
        return RawKernel(self._library, name, self.kernels[name])
