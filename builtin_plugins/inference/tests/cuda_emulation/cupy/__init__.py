"""A CPU emulator of the slice of CuPy that the ``cuda`` device driver uses. NOT CuPy.

Put this folder's parent first on ``sys.path`` (``PYTHONPATH``) and ``import cupy``
finds this package instead; :attr:`IS_CPU_EMULATOR` tells them apart. It is for tests
that check the driver (:mod:`noa.builtin_plugins.inference.cuda_device`) and its CUDA C
kernels on a machine without a GPU, in a process of their own.

What it emulates:

- Device memory (:mod:`._array`): arrays behind the same host/device wall as CuPy's,
  poisoned with NaN when fresh and guarded at both ends.
- ``RawModule``/``RawKernel`` (:mod:`._kernel`, :mod:`._translate`): the kernels' CUDA C,
  compiled by g++ as C++ over a small runtime (:file:`_runtime.hpp`) that runs every CUDA
  thread of a block as a fiber, phase by phase between ``__syncthreads()`` barriers, in
  a chosen order (:func:`emulator.schedule`). Launches are checked for CUDA's limits and
  argument types; after each, for a barrier reached by part of a block, shared memory
  written past its size, and memory written outside the kernel's writable arguments.
- ``matmul`` as NumPy's float32 product (for cuBLAS), elementwise ``tanh``, arithmetic,
  streams and memory pools as no-ops, and the compute-type switch of
  ``cupy._core._routines_linalg`` that the driver sets to keep TF32 off.

What it cannot show:

- Real launch behaviour: NVRTC itself (its dialect, its diagnostics), the GPU's actual
  limits and occupancy, launch failures, asynchrony and streams. Only the limits every
  CUDA GPU shares are checked.
- Warp-level behaviour: blocks run one at a time and a block's threads one at a time
  between barriers, so there are no true data races, no memory-model or warp-synchronous
  effects, no atomics; a race shows only as the two schedules disagreeing, and only when
  the inputs make it matter. Warp intrinsics are not provided (the kernels use none).
- Out-of-bounds reads: they are not reported, only seen through their results (the
  guards and fresh memory read as NaN; a neighbour's data in the same allocation does
  not). Nor are faults of a real device: no AddressSanitizer, no compute-sanitizer.
- Floating point as the GPU does it: glibc's ``expf``/``erff``/``sqrtf`` and no FMA
  contraction stand in for CUDA's; results agree to rounding, not bit for bit.
- cuBLAS, TF32, and anything about performance or memory use.
"""

from __future__ import annotations

from typing import Any

import numpy as _np
from numpy.typing import DTypeLike

from . import _core, cuda, emulator
from ._array import allocate, ndarray, wrap
from ._kernel import RawKernel, RawModule

__all__ = [
    "IS_CPU_EMULATOR",
    "RawKernel",
    "RawModule",
    "_core",
    "array",
    "asarray",
    "ascontiguousarray",
    "asnumpy",
    "cuda",
    "empty",
    "empty_like",
    "emulator",
    "float32",
    "float64",
    "get_default_memory_pool",
    "get_default_pinned_memory_pool",
    "int32",
    "int64",
    "matmul",
    "ndarray",
    "ones",
    "tanh",
    "zeros",
    "zeros_like",
]

#: Only the emulator has this: real CuPy does not.
IS_CPU_EMULATOR = True

float32 = _np.float32
float64 = _np.float64
int32 = _np.int32
int64 = _np.int64


def _shape(shape: Any) -> tuple[int, ...]:
    return (int(shape),) if isinstance(shape, int | _np.integer) else tuple(shape)


def empty(shape: Any, dtype: DTypeLike = float) -> ndarray:
    """New memory, every byte a NaN pattern: reading it before writing it shows."""
    return allocate(_shape(shape), _np.dtype(dtype))


def empty_like(a: ndarray, dtype: DTypeLike | None = None) -> ndarray:
    return empty(a.shape, a.dtype if dtype is None else dtype)


def zeros(shape: Any, dtype: DTypeLike = float) -> ndarray:
    return wrap(_np.zeros(_shape(shape), dtype))


def zeros_like(a: ndarray, dtype: DTypeLike | None = None) -> ndarray:
    return zeros(a.shape, a.dtype if dtype is None else dtype)


def ones(shape: Any, dtype: DTypeLike = float) -> ndarray:
    return wrap(_np.ones(_shape(shape), dtype))


def array(obj: Any, dtype: DTypeLike | None = None, copy: bool = True, order: str = "K") -> ndarray:
    """A new C-ordered device array (the emulator keeps every array C-ordered)."""
    if isinstance(obj, ndarray):
        if not copy and (dtype is None or obj.dtype == _np.dtype(dtype)):
            return obj
        return obj.astype(obj.dtype if dtype is None else dtype)
    return wrap(_np.array(obj, dtype=dtype))


def asarray(a: Any, dtype: DTypeLike | None = None) -> ndarray:
    """``a`` itself when it is a device array of that dtype, else a device copy."""
    return array(a, dtype=dtype, copy=False)


def ascontiguousarray(a: Any, dtype: DTypeLike | None = None) -> ndarray:
    if isinstance(a, ndarray) and a.flags.c_contiguous:
        return asarray(a, dtype)
    if isinstance(a, ndarray):
        return a.astype(a.dtype if dtype is None else dtype)
    return wrap(_np.ascontiguousarray(a, dtype=dtype))


def asnumpy(a: Any) -> _np.ndarray[Any, Any]:
    """A host copy of a device array (a host array comes back as it is)."""
    if isinstance(a, ndarray):
        return a.get()
    return _np.asarray(a)


def _device(kernel: str, *arrays: Any) -> None:
    for a in arrays:
        if not isinstance(a, ndarray):
            raise TypeError(f"cupy.{kernel} takes device arrays, got {type(a).__name__}")


def matmul(a: ndarray, b: ndarray, out: ndarray | None = None) -> ndarray:
    """NumPy's product, standing in for cuBLAS (``out`` written in place, as CuPy does)."""
    _device("matmul", a, b, *(() if out is None else (out,)))
    if out is None:
        return wrap(_np.matmul(a._data, b._data))
    _np.matmul(a._data, b._data, out=out._data)
    return out


def tanh(x: ndarray) -> ndarray:
    _device("tanh", x)
    return wrap(_np.tanh(x._data))


class _MemoryPool:
    """Memory is NumPy's: the pools hold nothing and free nothing."""

    def free_all_blocks(self) -> None:
        return None

    def used_bytes(self) -> int:
        return 0


_POOL = _MemoryPool()
_PINNED_POOL = _MemoryPool()


def get_default_memory_pool() -> _MemoryPool:
    return _POOL


def get_default_pinned_memory_pool() -> _MemoryPool:
    return _PINNED_POOL
