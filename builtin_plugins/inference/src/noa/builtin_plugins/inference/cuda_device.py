"""The ``cuda`` device driver: cuBLAS for the matrix products, CUDA C kernels for the rest.

CuPy is imported on first use, never when this module is, so the module imports (and
:meth:`CudaDevice.is_available` answers False) on a machine without CuPy or a GPU.

Products go through ``cupy.matmul`` with ``out=`` in plain float32: with ``CUPY_TF32=1``
CuPy would use TF32 tensor cores, whose 10-bit mantissa misses the port's 1e-4, so the
driver pins float32 products to full precision.

Everything between the products is one launch of a kernel from :mod:`.cuda_kernels`. Attention
is one fused kernel over the packed batch: a block per (query, head, sequence) scores the
query against its own sequence's keys, takes a stable softmax in shared memory and sums
the values. No padding is computed and no per-sequence work is queued from Python (cuBLAS
per sequence costs ~6 launches and three strided copies per sequence and layer; padding
wastes work quadratic in the padding). It costs O(length^2 x head width) per head on
CUDA cores, far from the bottleneck at sentence-encoder lengths.
"""

from __future__ import annotations

import importlib
import math
import os
import re
from typing import Any, Literal

import numpy as np
from noa.builtin_plugins.inference.cuda_kernels import KERNELS
from numpy.typing import ArrayLike, NDArray

__all__ = ["CudaDevice"]

# Threads of the row kernels (layer norm, softmax, pooling); the block reductions halve
# the block each step, so this is a power of two.
_ROW_BLOCK = 256
# Threads of an attention block: keys are scored this many at a time.
_ATTENTION_BLOCK = 128
# Threads of an element-wise block, and the most blocks of one launch (threads loop).
_FLAT_BLOCK = 256
_FLAT_GRID = 65535
# Dynamic shared memory a block may have without opting in on any GPU since Kepler.
_SHARED_LIMIT = 48 * 1024
_FLOAT = 4
_ROW_SCRATCH = _ROW_BLOCK * _FLOAT
# Host int32 arrays (offsets, lengths) copied to the device, kept by content: one batch
# passes the same ones to every layer's attention, and a copy from pageable memory
# stalls the host until the GPU has drained its queue.
_INT_CACHE_SIZE = 8


_KERNEL_NAMES = re.findall(r'extern "C" __global__ void (\w+)', KERNELS)


class CudaDevice:
    """Implements :class:`noa.plugin_sdk.ports.device.DevicePort` on CuPy's current GPU."""

    name = "cuda"

    def __init__(self) -> None:
        #: Why :meth:`is_available` answered False (None until it has, or when it is).
        self.unavailable_reason: str | None = None
        self._available: bool | None = None
        self._cp: Any = None
        self._kernels: dict[str, Any] = {}
        self._ints: dict[tuple[tuple[int, ...], bytes], Any] = {}

    def is_available(self) -> bool:
        """Whether CuPy imports, compiles these kernels and runs them and a product here."""
        if self._available is None:
            try:
                self._start()
                self._probe()
                self._available = True
            except Exception as exc:  # any failure means "not here": CuPy, driver, NVRTC
                self.unavailable_reason = f"{type(exc).__name__}: {exc}"
                self._available = False
        return self._available

    def set_threads(self, threads: int) -> None:
        return None  # no host-side threads: the work runs on the GPU

    def close(self) -> None:
        if not self._available:
            return
        self.synchronize()
        self._ints.clear()
        self._cp.get_default_memory_pool().free_all_blocks()
        self._cp.get_default_pinned_memory_pool().free_all_blocks()

    def _start(self) -> None:
        if self._cp is not None:
            return
        try:
            # By name, so type checking needs no CuPy: it is an optional extra.
            cupy = importlib.import_module("cupy")
        except ImportError as exc:
            raise ImportError(
                f"the cuda device needs CuPy ({exc}): pip install 'noa-plugin-inference[cuda]'"
            ) from exc
        _pin_float32_products()
        module = cupy.RawModule(code=KERNELS)
        self._kernels = {name: module.get_function(name) for name in _KERNEL_NAMES}
        self._cp = cupy

    def _probe(self) -> None:
        """Run one of these kernels (NVRTC, the driver) and one product (cuBLAS)."""
        cp = self._cp
        x = cp.ones((2, 3), dtype=cp.float32)
        bias = cp.ones(3, dtype=cp.float32)
        self._launch("noa_add_bias", (1,), _FLAT_BLOCK, (x, bias, np.int64(6), np.int32(3)))
        got = cp.asnumpy(cp.matmul(x, x.T))
        if not np.array_equal(got, np.full((2, 2), 12.0, np.float32)):
            raise RuntimeError(f"a probe product came out wrong: {got.tolist()}")

    def _cupy(self) -> Any:
        """CuPy, once this device has been found usable; a clear error when it is not."""
        if not self._available and not self.is_available():
            raise RuntimeError(
                f"the cuda device is not usable here ({self.unavailable_reason}); "
                "install noa-plugin-inference[cuda] on a machine with a GPU, "
                "or choose the cpu or auto device"
            )
        return self._cp

    def _launch(
        self,
        name: str,
        grid: tuple[int, ...],
        block: int,
        args: tuple[Any, ...],
        shared: int = 0,
    ) -> None:
        if shared > _SHARED_LIMIT:
            raise ValueError(
                f"{name} needs {shared} bytes of shared memory per block, over {_SHARED_LIMIT}"
            )
        self._kernels[name](grid, (block,), args, shared_mem=shared)

    # Functional kernels.

    def matmul(self, a: ArrayLike, b: ArrayLike) -> NDArray[np.float32]:
        cp = self._cupy()
        product = cp.matmul(cp.asarray(_f32(a)), cp.asarray(_f32(b)))
        return _host_f32(cp.asnumpy(product))

    def layer_norm(
        self, x: ArrayLike, weight: ArrayLike, bias: ArrayLike, eps: float = 1e-5
    ) -> NDArray[np.float32]:
        cp = self._cupy()
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        rows = x32.reshape(-1, x32.shape[-1])
        on_device, out = cp.asarray(rows), cp.empty(rows.shape, cp.float32)
        zero_bias, zero_residual = cp.zeros(rows.shape[1], cp.float32), cp.zeros_like(on_device)
        weight32, bias32 = cp.asarray(_f32(weight)), cp.asarray(_f32(bias))
        self.bias_residual_layer_norm(
            on_device, zero_bias, zero_residual, weight32, bias32, eps, out
        )
        return _host_f32(cp.asnumpy(out)).reshape(x32.shape)

    def gelu(
        self, x: ArrayLike, *, approximate: Literal["none", "tanh"] = "none"
    ) -> NDArray[np.float32]:
        cp = self._cupy()
        x32 = np.array(x, dtype=np.float32, order="C", ndmin=1)
        on_device = cp.asarray(x32)
        if approximate == "tanh":
            inner = np.float32(math.sqrt(2.0 / math.pi)) * (
                on_device + np.float32(0.044715) * on_device**3
            )
            result = np.float32(0.5) * on_device * (np.float32(1.0) + cp.tanh(inner))
            return _host_f32(cp.asnumpy(result))
        if approximate != "none":
            raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
        rows = on_device.reshape(-1, x32.shape[-1])
        self.bias_gelu(rows, cp.zeros(rows.shape[1], cp.float32))
        return _host_f32(cp.asnumpy(on_device))

    def softmax(self, x: ArrayLike, axis: int = -1) -> NDArray[np.float32]:
        cp = self._cupy()
        moved = np.ascontiguousarray(np.moveaxis(np.asarray(x, np.float32), axis, -1))
        on_device = cp.asarray(moved)
        if moved.size:
            cols = moved.shape[-1]
            grid = (moved.size // cols,)
            args = (on_device, np.int32(cols))
            self._launch("noa_softmax_rows", grid, _ROW_BLOCK, args, _ROW_SCRATCH)
        return np.moveaxis(_host_f32(cp.asnumpy(on_device)), -1, axis)

    # Memory.

    def empty(self, shape: tuple[int, ...], dtype: str = "float32") -> Any:
        return self._cupy().empty(shape, dtype=dtype)

    def to_device(self, host: ArrayLike, dtype: str = "float32") -> Any:
        return self._cupy().array(host, dtype=dtype, order="C")

    def to_host(self, array: Any) -> NDArray[Any]:
        cp = self._cupy()
        if isinstance(array, cp.ndarray):
            host: NDArray[Any] = cp.asnumpy(array)
            return host
        return np.array(array)

    def synchronize(self) -> None:
        self._cupy().cuda.get_current_stream().synchronize()

    # Encoder kernels.

    def prepare_weight(self, w_t: ArrayLike) -> Any:
        return self.to_device(w_t)

    def gemm(self, x: Any, w_t: Any, out: Any) -> None:
        cp = self._cupy()
        if x.ndim != 2 or w_t.ndim != 2 or x.shape[1] != w_t.shape[0]:
            raise ValueError(f"gemm: x {x.shape} and w_t {w_t.shape} do not chain")
        _expect(out, (x.shape[0], w_t.shape[1]), "out")
        cp.matmul(x, w_t, out=out)

    def embed(
        self,
        ids: Any,
        positions: Any,
        word: Any,
        position: Any,
        token_type: Any,
        weight: Any,
        bias: Any,
        eps: float,
        out: Any,
    ) -> None:
        cp = self._cupy()
        tokens, cols = out.shape
        ids, positions = self._device_ints(ids), self._device_ints(positions)
        _expect(ids, (tokens,), "ids")
        _expect(positions, (tokens,), "positions")
        _expect(word, (word.shape[0], cols), "word")
        _expect(position, (position.shape[0], cols), "position")
        for name, row in (("token_type", token_type), ("weight", weight), ("bias", bias)):
            _expect(row, (cols,), name)
        _floats(cp, word, position, token_type, weight, bias, out)
        if tokens:
            args = (ids, positions, word, position, token_type, weight, bias, np.float32(eps))
            self._launch(
                "noa_embed",
                (tokens,),
                _ROW_BLOCK,
                (*args, out, np.int32(cols)),
                (cols + _ROW_BLOCK) * _FLOAT,
            )

    def add_bias(self, x: Any, bias: Any) -> None:
        self._flat("noa_add_bias", x, bias)

    def bias_gelu(self, x: Any, bias: Any) -> None:
        self._flat("noa_bias_gelu", x, bias)

    def _flat(self, kernel: str, x: Any, bias: Any) -> None:
        cp = self._cupy()
        if x.ndim != 2:
            raise ValueError(f"x must be 2-D, got shape {x.shape}")
        _expect(bias, (x.shape[1],), "bias")
        _floats(cp, x, bias)
        if x.size:
            blocks = min(-(-x.size // _FLAT_BLOCK), _FLAT_GRID)
            args = (x, bias, np.int64(x.size), np.int32(x.shape[1]))
            self._launch(kernel, (blocks,), _FLAT_BLOCK, args)

    def bias_residual_layer_norm(
        self,
        x: Any,
        bias: Any,
        residual: Any,
        weight: Any,
        beta: Any,
        eps: float,
        out: Any,
    ) -> None:
        cp = self._cupy()
        if x.ndim != 2:
            raise ValueError(f"x must be 2-D, got shape {x.shape}")
        rows, cols = x.shape
        _expect(residual, x.shape, "residual")
        _expect(out, x.shape, "out")
        for name, row in (("bias", bias), ("weight", weight), ("beta", beta)):
            _expect(row, (cols,), name)
        _floats(cp, x, bias, residual, weight, beta, out)
        if rows:
            self._launch(
                "noa_bias_residual_layer_norm",
                (rows,),
                _ROW_BLOCK,
                (x, bias, residual, weight, beta, np.float32(eps), out, np.int32(cols)),
                (cols + _ROW_BLOCK) * _FLOAT,
            )

    def attention(self, qkv: Any, offsets: Any, lengths: Any, heads: int, out: Any) -> None:
        cp = self._cupy()
        tokens, width = out.shape
        if heads <= 0 or width % heads:
            raise ValueError(f"width {width} is not a multiple of {heads} heads")
        _expect(qkv, (tokens, 3 * width), "qkv")
        _floats(cp, qkv, out)
        longest = _check_spans(cp, offsets, lengths, tokens)
        offsets, lengths = self._device_ints(offsets), self._device_ints(lengths)
        if longest and offsets.size:
            head_width = width // heads
            self._launch(
                "noa_attention",
                (longest, heads, offsets.size),
                _ATTENTION_BLOCK,
                (qkv, offsets, lengths, np.int32(heads), np.int32(head_width), out),
                (head_width + longest + _ATTENTION_BLOCK) * _FLOAT,
            )

    def mean_pool(self, hidden: Any, offsets: Any, lengths: Any, normalize: bool, out: Any) -> None:
        cp = self._cupy()
        sequences, cols = out.shape
        _expect(hidden, (hidden.shape[0], cols), "hidden")
        _floats(cp, hidden, out)
        _check_spans(cp, offsets, lengths, hidden.shape[0])
        offsets, lengths = self._device_ints(offsets), self._device_ints(lengths)
        _expect(offsets, (sequences,), "offsets")
        if sequences:
            self._launch(
                "noa_mean_pool",
                (sequences,),
                _ROW_BLOCK,
                (hidden, offsets, lengths, np.int32(bool(normalize)), np.int32(cols), out),
                _ROW_SCRATCH,
            )

    def _device_ints(self, values: Any) -> Any:
        """A contiguous int32 device array of ``values`` (a host or device array)."""
        cp = self._cp
        if isinstance(values, cp.ndarray):
            return cp.ascontiguousarray(values, dtype=cp.int32)
        host = np.ascontiguousarray(values, dtype=np.int32)
        key = (host.shape, host.tobytes())
        cached = self._ints.get(key)
        if cached is None:
            if len(self._ints) >= _INT_CACHE_SIZE:
                self._ints.clear()
            cached = self._ints[key] = cp.asarray(host)
        return cached


def _pin_float32_products() -> None:
    """Make CuPy's float32 products full float32 (``CUBLAS_COMPUTE_32F``), never TF32.

    CuPy reads ``CUPY_TF32`` once, on its first float32 product, and keeps the choice
    per process; setting the compute type first overrides it. This also decides it for
    any other CuPy user in the process, to the precision CuPy defaults to anyway.
    """
    try:
        linalg: Any = importlib.import_module("cupy._core._routines_linalg")

        linalg.set_compute_type(np.float32, linalg.COMPUTE_TYPE_FP32)
        tf32 = linalg.get_compute_type(np.float32) == linalg.COMPUTE_TYPE_TF32
    except (ImportError, AttributeError):  # a CuPy that moved it: only the variable is left
        tf32 = os.environ.get("CUPY_TF32", "0") not in ("", "0")
    if tf32:
        raise RuntimeError("CuPy uses TF32 for float32 products; unset CUPY_TF32")


def _expect(array: Any, shape: tuple[int, ...], name: str) -> None:
    if tuple(array.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(array.shape)}, expected {shape}")


def _floats(cp: Any, *arrays: Any) -> None:
    """The kernels index raw pointers: refuse what is not contiguous float32 on the GPU."""
    for array in arrays:
        if not (
            isinstance(array, cp.ndarray) and array.dtype == np.float32 and array.flags.c_contiguous
        ):
            raise ValueError(
                "the cuda device's encoder kernels take C-contiguous float32 device arrays "
                f"(from empty or to_device), got {type(array).__name__} "
                f"{getattr(array, 'dtype', '?')} {getattr(array, 'shape', '?')}"
            )


def _check_spans(cp: Any, offsets: Any, lengths: Any, tokens: int) -> int:
    """The longest sequence; host spans are checked to lie within ``tokens`` rows, as a
    kernel reading past them would fault or read another batch's rows. (Device spans
    are taken as given: checking them would wait for the GPU.)"""
    if isinstance(offsets, cp.ndarray) or isinstance(lengths, cp.ndarray):
        if offsets.shape != lengths.shape:
            raise ValueError(f"offsets {offsets.shape} and lengths {lengths.shape} differ")
        return int(lengths.max()) if lengths.size else 0
    starts, sizes = np.asarray(offsets, np.int64), np.asarray(lengths, np.int64)
    if starts.ndim != 1 or starts.shape != sizes.shape:
        raise ValueError(f"offsets {starts.shape} and lengths {sizes.shape} differ")
    if starts.size and (starts.min() < 0 or sizes.min() < 0 or (starts + sizes).max() > tokens):
        raise ValueError(f"a sequence lies outside the {tokens} packed tokens")
    return int(sizes.max()) if sizes.size else 0


def _f32(x: ArrayLike) -> NDArray[np.float32]:
    return np.ascontiguousarray(x, dtype=np.float32)


def _host_f32(x: Any) -> NDArray[np.float32]:
    return np.asarray(x, dtype=np.float32)
