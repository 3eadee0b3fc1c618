"""Emulated device memory: :class:`ndarray`, a NumPy array behind a host/device wall.

Like a CuPy array, it is not a NumPy array: ``isinstance(x, numpy.ndarray)`` is False,
NumPy will not convert it implicitly (``numpy.asarray`` raises ``TypeError``, as CuPy's
does), arithmetic with a host array raises ``TypeError``, and the way back to the host
is :func:`cupy.asnumpy` or :meth:`ndarray.get`. So a driver that mixes host and device
arrays up fails here as it would on a GPU, instead of passing by accident.

Every array lives in an :class:`Allocation`: its bytes, with a guard zone either side.
Fresh memory (:func:`allocate`) and the guards hold a NaN pattern, so a kernel that reads
memory it never wrote, or reads past an array, computes NaN. After each launch the
kernel emulator checks that nothing outside the arrays it was passed changed, the
guards included (:meth:`Allocation.changed_outside`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

__all__ = ["Allocation", "allocate", "ndarray", "wrap"]

#: Bytes of guard zone either side of every allocation (a multiple of 64: alignment).
GUARD_BYTES = 256
#: The 32-bit pattern of guards and of fresh memory: a quiet NaN as a float32, and an
#: int32 (2143346349) far outside any table it might index.
POISON = 0x7FC0DEAD


class Allocation:
    """One block of emulated device memory: guard, payload, guard."""

    def __init__(self, nbytes: int) -> None:
        words = -(-nbytes // 4)
        self.raw: NDArray[np.uint8] = np.empty(GUARD_BYTES * 2 + words * 4, np.uint8)
        self.raw.view(np.uint32)[:] = POISON
        self.nbytes = nbytes

    def payload(self, shape: tuple[int, ...], dtype: DTypeLike) -> NDArray[Any]:
        data = self.raw[GUARD_BYTES : GUARD_BYTES + self.nbytes].view(dtype)
        return data.reshape(shape)

    def offset_of(self, data: NDArray[Any]) -> int:
        """Where ``data`` (a view into this allocation) starts in :attr:`raw`, in bytes."""
        return int(data.ctypes.data) - int(self.raw.ctypes.data)

    def snapshot(self) -> NDArray[np.uint8]:
        return self.raw.copy()

    def changed_outside(
        self, before: NDArray[np.uint8], spans: list[tuple[int, int]]
    ) -> int | None:
        """The first byte, counted from the payload's start (negative: the guard before
        it), of the first 4-byte word that changed outside ``spans`` (byte ranges of
        :attr:`raw` a kernel may write); None when nothing did."""
        changed = self.raw.view(np.uint32) != before.view(np.uint32)
        for start, stop in spans:
            changed[start // 4 : -(-stop // 4)] = False
        hits = np.flatnonzero(changed)
        return int(hits[0]) * 4 - GUARD_BYTES if hits.size else None


def allocate(shape: tuple[int, ...], dtype: DTypeLike) -> ndarray:
    """A new array whose every byte holds :data:`POISON` (NaN for floats)."""
    kind = np.dtype(dtype)
    shape = tuple(int(n) for n in shape)
    allocation = Allocation(int(np.prod(shape, dtype=np.int64)) * kind.itemsize)
    return ndarray(allocation.payload(shape, kind), allocation)


def wrap(host: Any, dtype: DTypeLike | None = None) -> ndarray:
    """A new device array holding a copy of ``host`` (C order)."""
    values = np.asarray(host, dtype=dtype)
    out = allocate(values.shape, values.dtype)
    out._data[...] = values
    return out


def _operand(value: Any) -> Any:
    if isinstance(value, ndarray):
        return value._data
    if isinstance(value, np.ndarray):
        raise TypeError(
            "Unsupported type <class 'numpy.ndarray'>: a host array cannot meet a device "
            "array (the CuPy emulator refuses what CuPy refuses)"
        )
    if isinstance(value, int | float | np.generic):
        return value
    return NotImplemented


def _binary(op: Callable[[Any, Any], Any], reflected: bool = False) -> Callable[..., Any]:
    def method(self: ndarray, other: Any) -> Any:
        value = _operand(other)
        if value is NotImplemented:
            return NotImplemented
        result = op(value, self._data) if reflected else op(self._data, value)
        return wrap(result)

    return method


class _Flags:
    def __init__(self, data: NDArray[Any]) -> None:
        self.c_contiguous = bool(data.flags.c_contiguous)
        self.f_contiguous = bool(data.flags.f_contiguous)


class ndarray:  # CuPy's name
    """An emulated device array: a NumPy view into an :class:`Allocation`."""

    # NumPy defers every operator to this class instead of converting it.
    __array_ufunc__ = None

    def __init__(self, data: NDArray[Any], allocation: Allocation) -> None:
        self._data = data
        self._allocation = allocation

    # What CuPy's arrays answer.

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._data.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._data.dtype

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def size(self) -> int:
        return int(self._data.size)

    @property
    def nbytes(self) -> int:
        return int(self._data.nbytes)

    @property
    def flags(self) -> _Flags:
        return _Flags(self._data)

    @property
    def T(self) -> ndarray:
        return ndarray(self._data.T, self._allocation)

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, key: Any) -> ndarray:
        if isinstance(key, ndarray | np.ndarray) or (
            isinstance(key, tuple) and any(isinstance(k, ndarray | np.ndarray) for k in key)
        ):
            raise TypeError("the CuPy emulator supports basic indexing (ints, slices) only")
        view = self._data[key]
        if isinstance(view, np.ndarray):
            return ndarray(view, self._allocation)
        return wrap(view)  # a single element: CuPy returns a 0-d device array

    def reshape(self, *shape: Any) -> ndarray:
        view = self._data.reshape(*shape)
        if not np.shares_memory(view, self._data):
            return wrap(view)
        return ndarray(view, self._allocation)

    def astype(self, dtype: DTypeLike, copy: bool = True) -> ndarray:
        if not copy and self._data.dtype == np.dtype(dtype):
            return self
        return wrap(self._data, dtype)

    def copy(self) -> ndarray:
        return wrap(self._data)

    def max(self) -> ndarray:
        return wrap(self._data.max())

    def min(self) -> ndarray:
        return wrap(self._data.min())

    def sum(self) -> ndarray:
        return wrap(self._data.sum())

    def get(self) -> NDArray[Any]:
        """A host copy (CuPy's spelling of :func:`cupy.asnumpy`)."""
        return np.array(self._data)

    def __int__(self) -> int:
        return int(self._data)

    def __float__(self) -> float:
        return float(self._data)

    def __bool__(self) -> bool:
        return bool(self._data)

    def __array__(self, *args: Any, **kwargs: Any) -> NDArray[Any]:
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed. "
            "Please use `.get()` to construct a NumPy array explicitly. (CuPy emulator)"
        )

    def __repr__(self) -> str:
        return f"emulated-device-array({self._data!r})"

    __add__ = _binary(operator.add)
    __radd__ = _binary(operator.add, reflected=True)
    __sub__ = _binary(operator.sub)
    __rsub__ = _binary(operator.sub, reflected=True)
    __mul__ = _binary(operator.mul)
    __rmul__ = _binary(operator.mul, reflected=True)
    __truediv__ = _binary(operator.truediv)
    __rtruediv__ = _binary(operator.truediv, reflected=True)
    __pow__ = _binary(operator.pow)

    def __neg__(self) -> ndarray:
        return wrap(-self._data)
