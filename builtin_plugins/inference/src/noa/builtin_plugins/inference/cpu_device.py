"""The ``cpu`` device driver: OpenBLAS for the matrix products, Numba for the rest.

One thread pool owns the thread budget: OpenBLAS is held to one thread, and every
kernel (products included) splits its rows across this driver's own threads. Two pools
spinning on the same cores cost far more than they give: OpenBLAS's own threads made the
small per-head products of attention ~9x slower here. Attention is computed per sequence
on its own tokens, so a short sentence batched with a long one costs no padding.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
from noa.builtin_plugins.inference import cpu_kernels as k
from numpy.typing import ArrayLike, NDArray

__all__ = ["CpuDevice", "Weight"]

# Below these many rows a kernel runs on one thread: handing work over costs ~20 us.
_MIN_GEMM_ROWS = 32
_MIN_GEMM_COLUMNS = 128
# Below this many rows a product runs in Numba (few_rows_gemm), from this many in BLAS.
_FEW_ROWS = 32


class Weight:
    """A weight matrix in both layouts the products read: ``t`` is ``(k, n)`` for BLAS,
    ``rows`` is ``(n, k)`` for the few-rows kernel. Twice the memory, measured worth it:
    short batches spend most of their time in these products."""

    __slots__ = ("rows", "t")

    def __init__(self, w_t: ArrayLike) -> None:
        self.t = np.array(w_t, dtype=np.float32, order="C")
        self.rows = np.ascontiguousarray(self.t.T)


_MIN_ROWS = 256


class CpuDevice:
    """Implements :class:`noa.plugin_sdk.ports.device.DevicePort` on the host CPU."""

    name = "cpu"

    def __init__(self) -> None:
        # Attention scores of one sequence, all heads, per thread; grown as needed.
        self._scores: list[NDArray[np.float32]] = []
        self._threads = 1
        self._pool: ThreadPoolExecutor | None = None
        self.set_threads(0)

    def is_available(self) -> bool:
        return True

    def set_threads(self, threads: int) -> None:
        from threadpoolctl import threadpool_limits

        threads = threads or len(os.sched_getaffinity(0))
        threadpool_limits(limits=1, user_api="blas")
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._threads = threads
        self._pool = (
            ThreadPoolExecutor(threads - 1, thread_name_prefix="noa-cpu") if threads > 1 else None
        )
        self._scores = [np.empty(0, np.float32) for _ in range(threads)]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _split(self, rows: int, minimum: int) -> list[tuple[int, int]]:
        parts = max(1, min(self._threads, rows // minimum))
        bounds = [rows * i // parts for i in range(parts + 1)]
        return [(bounds[i], bounds[i + 1]) for i in range(parts)]

    def _run(self, work: Callable[[int, int, int], None], spans: list[tuple[int, int]]) -> None:
        """``work(part, start, stop)`` for each span: the first on this thread, the rest
        on the pool; waits for all, and re-raises the first error."""
        if len(spans) == 1 or self._pool is None:
            for part, (start, stop) in enumerate(spans):
                work(part, start, stop)
            return
        futures = [
            self._pool.submit(work, part, start, stop)
            for part, (start, stop) in enumerate(spans[1:], 1)
        ]
        work(0, *spans[0])
        for future in futures:
            future.result()

    # Functional kernels.

    def matmul(self, a: ArrayLike, b: ArrayLike) -> NDArray[np.float32]:
        return np.matmul(_f32(a), _f32(b))

    def layer_norm(
        self, x: ArrayLike, weight: ArrayLike, bias: ArrayLike, eps: float = 1e-5
    ) -> NDArray[np.float32]:
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        rows = x32.reshape(-1, x32.shape[-1])
        out = np.empty_like(rows)
        k.layer_norm(rows, _f32(weight), _f32(bias), eps, out)
        return out.reshape(x32.shape)

    def gelu(
        self, x: ArrayLike, *, approximate: Literal["none", "tanh"] = "none"
    ) -> NDArray[np.float32]:
        x32 = np.array(x, dtype=np.float32, order="C", ndmin=1)
        if approximate == "tanh":
            inner = np.float32(math.sqrt(2.0 / math.pi)) * (x32 + np.float32(0.044715) * x32**3)
            return np.float32(0.5) * x32 * (np.float32(1.0) + np.tanh(inner))
        if approximate != "none":
            raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
        rows = x32.reshape(-1, x32.shape[-1])
        k.bias_gelu(rows, np.zeros(rows.shape[1], np.float32))
        return x32

    def softmax(self, x: ArrayLike, axis: int = -1) -> NDArray[np.float32]:
        moved = np.ascontiguousarray(np.moveaxis(np.asarray(x, np.float32), axis, -1))
        rows = moved.reshape(-1, moved.shape[-1])
        _softmax_rows(rows)
        return np.moveaxis(moved, -1, axis)

    # Memory.

    def empty(self, shape: tuple[int, ...], dtype: str = "float32") -> NDArray[Any]:
        return np.empty(shape, dtype=dtype)

    def to_device(self, host: ArrayLike, dtype: str = "float32") -> NDArray[Any]:
        return np.array(host, dtype=dtype, order="C")

    def to_host(self, array: NDArray[Any]) -> NDArray[Any]:
        return np.array(array)

    def synchronize(self) -> None:
        return None

    # Encoder kernels.

    def prepare_weight(self, w_t: ArrayLike) -> Weight:
        return Weight(w_t)

    def gemm(self, x: NDArray[np.float32], w_t: Weight, out: NDArray[Any]) -> None:
        if x.shape[0] >= _FEW_ROWS:

            def by_rows(_: int, a: int, b: int) -> None:
                np.matmul(x[a:b], w_t.t, out=out[a:b])

            self._run(by_rows, self._split(x.shape[0], _MIN_GEMM_ROWS))
            return

        # A short batch: Numba's dot-product kernel, each thread taking some columns,
        # so each reads only its share of the weights.
        columns = w_t.rows.shape[0]
        parts = max(1, min(self._threads, columns // _MIN_GEMM_COLUMNS))
        bounds = [columns * i // parts // 4 * 4 for i in range(parts)] + [columns]
        spans = [(bounds[i], bounds[i + 1]) for i in range(parts)]
        self._run(lambda _, a, b: k.few_rows_gemm(x, w_t.rows, out, a, b), spans)

    def embed(
        self,
        ids: NDArray[np.int32],
        positions: NDArray[np.int32],
        word: NDArray[np.float32],
        position: NDArray[np.float32],
        token_type: NDArray[np.float32],
        weight: NDArray[np.float32],
        bias: NDArray[np.float32],
        eps: float,
        out: NDArray[np.float32],
    ) -> None:
        k.embed(ids, positions, word, position, token_type, weight, bias, eps, out)

    def add_bias(self, x: NDArray[np.float32], bias: NDArray[np.float32]) -> None:
        self._run(lambda _, a, b: k.add_bias(x[a:b], bias), self._split(x.shape[0], _MIN_ROWS))

    def bias_gelu(self, x: NDArray[np.float32], bias: NDArray[np.float32]) -> None:
        self._run(lambda _, a, b: k.bias_gelu(x[a:b], bias), self._split(x.shape[0], _MIN_ROWS))

    def bias_residual_layer_norm(
        self,
        x: NDArray[np.float32],
        bias: NDArray[np.float32],
        residual: NDArray[np.float32],
        weight: NDArray[np.float32],
        beta: NDArray[np.float32],
        eps: float,
        out: NDArray[np.float32],
    ) -> None:
        def part(_: int, a: int, b: int) -> None:
            k.bias_residual_layer_norm(x[a:b], bias, residual[a:b], weight, beta, eps, out[a:b])

        self._run(part, self._split(x.shape[0], _MIN_ROWS))

    def attention(
        self,
        qkv: NDArray[np.float32],
        offsets: ArrayLike,
        lengths: ArrayLike,
        heads: int,
        out: NDArray[np.float32],
    ) -> None:
        width = out.shape[1]
        head = width // heads
        starts = np.asarray(offsets).tolist()
        sizes = np.asarray(lengths).tolist()
        longest = max(sizes, default=0)
        for i, scratch in enumerate(self._scores):
            if scratch.size < heads * longest * longest:
                self._scores[i] = np.empty(heads * longest * longest, np.float32)

        def part(thread: int, first: int, last: int) -> None:
            scratch = self._scores[thread]
            for start, n in zip(starts[first:last], sizes[first:last], strict=True):
                block = qkv[start : start + n]
                # Views, not copies: BLAS reads each head with the row stride of ``qkv``.
                q = block[:, :width].reshape(n, heads, head).transpose(1, 0, 2)
                k_t = block[:, width : 2 * width].reshape(n, heads, head).transpose(1, 2, 0)
                v = block[:, 2 * width :].reshape(n, heads, head).transpose(1, 0, 2)
                scores = scratch[: heads * n * n].reshape(heads, n, n)
                np.matmul(q, k_t, out=scores)
                _softmax_rows(scores.reshape(heads * n, n))
                context = out[start : start + n].reshape(n, heads, head).transpose(1, 0, 2)
                np.matmul(scores, v, out=context)

        self._run(part, _balance(sizes, self._threads))

    def mean_pool(
        self,
        hidden: NDArray[np.float32],
        offsets: ArrayLike,
        lengths: ArrayLike,
        normalize: bool,
        out: NDArray[np.float32],
    ) -> None:
        k.mean_pool(
            hidden, np.asarray(offsets, np.int32), np.asarray(lengths, np.int32), normalize, out
        )


def _balance(sizes: list[int], parts: int) -> list[tuple[int, int]]:
    """Split consecutive sequences into ``parts`` runs of about equal attention work."""
    if parts <= 1 or len(sizes) < 2:
        return [(0, len(sizes))]
    cost = np.cumsum(np.square(np.asarray(sizes, np.float64)))
    cuts = np.searchsorted(cost, cost[-1] * np.arange(1, parts) / parts)
    bounds = [0, *sorted({int(c) + 1 for c in cuts if int(c) + 1 < len(sizes)}), len(sizes)]
    return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def _softmax_rows(rows: NDArray[np.float32]) -> None:
    k.subtract_row_max(rows)
    np.exp(rows, out=rows)  # NumPy's exp is SIMD; a Numba loop calls libm per element
    k.exp_rows_normalize(rows)


def _f32(x: ArrayLike) -> NDArray[np.float32]:
    return np.asarray(x, dtype=np.float32)
