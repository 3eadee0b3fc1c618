"""Numba kernels for the CPU device: the fused element-wise and row-reduction work.

Matrix products stay in BLAS; what is here is the memory-bound work between them,
fused so each activation is read and written once. Every kernel works in place or into
a caller's buffer and allocates nothing.

All kernels compile with ``error_model="numpy"``: Numba's default inserts a zero check
before every division, which stops LLVM from vectorising the loop (a 6x slowdown of
GELU measured here). They are single-threaded: BLAS owns the thread budget, and two
spinning thread pools on the same cores cost far more than they give.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

__all__ = [
    "add_bias",
    "bias_gelu",
    "bias_residual_layer_norm",
    "embed",
    "exp_rows_normalize",
    "few_rows_gemm",
    "layer_norm",
    "mean_pool",
    "subtract_row_max",
]

_JIT = {"nogil": True, "fastmath": True, "cache": True, "error_model": "numpy"}

# erf(z) ~ 1 - (1 + a1 z + ... + a6 z^6)^-16 for z >= 0, absolute error <= 3e-7
# (Abramowitz and Stegun 7.1.28). Pure arithmetic, so the GELU loop vectorises.
_A1 = np.float32(0.0705230784)
_A2 = np.float32(0.0422820123)
_A3 = np.float32(0.0092705272)
_A4 = np.float32(0.0001520143)
_A5 = np.float32(0.0002765672)
_A6 = np.float32(0.0000430638)
_INV_SQRT2 = np.float32(1.0 / math.sqrt(2.0))
# erf(4) = 1 - 1.5e-8: clamping there keeps t**16 finite in float32.
_ERF_CLAMP = np.float32(4.0)
_ONE = np.float32(1.0)
_HALF = np.float32(0.5)


@numba.njit(**_JIT)
def _gelu(v: Any) -> Any:
    z = v * _INV_SQRT2
    az = min(abs(z), _ERF_CLAMP)
    t = _ONE + az * (_A1 + az * (_A2 + az * (_A3 + az * (_A4 + az * (_A5 + az * _A6)))))
    t = t * t
    t = t * t
    t = t * t
    t = t * t
    erf = math.copysign(_ONE - _ONE / t, z)
    return _HALF * v * (_ONE + erf)


@numba.njit(**_JIT)
def bias_gelu(x: Any, bias: Any) -> None:  # pragma: no cover - compiled
    rows, cols = x.shape
    for i in range(rows):
        row = x[i]
        for j in range(cols):
            row[j] = _gelu(row[j] + bias[j])


@numba.njit(**_JIT)
def _dots(x: Any, w: Any, out: Any, m: int, n: int) -> None:
    # One output row, four columns: four dot products sharing each load of x.
    xa = x[m]
    w0, w1, w2, w3 = w[n], w[n + 1], w[n + 2], w[n + 3]
    a0 = a1 = a2 = a3 = np.float32(0.0)
    for k in range(x.shape[1]):
        u = xa[k]
        a0 += u * w0[k]
        a1 += u * w1[k]
        a2 += u * w2[k]
        a3 += u * w3[k]
    out[m, n], out[m, n + 1], out[m, n + 2], out[m, n + 3] = a0, a1, a2, a3


@numba.njit(**_JIT)
def few_rows_gemm(x: Any, w: Any, out: Any, first: int, last: int) -> None:  # pragma: no cover
    """``out[:, first:last] = x @ w[first:last].T`` for a few rows of ``x``.

    ``w`` is ``(n, k)``, row-major: each output is a dot product of two contiguous rows,
    and a block of two rows by four columns keeps eight sums in registers, reading each
    weight once per two rows. For fewer than ~32 rows this beats OpenBLAS, which packs
    the whole weight matrix on every call. ``first`` and ``last`` are multiples of 4,
    or ``last`` is ``n``.
    """
    rows, depth = x.shape
    n = first
    while n + 3 < last:
        w0, w1, w2, w3 = w[n], w[n + 1], w[n + 2], w[n + 3]
        m = 0
        while m + 1 < rows:
            xa = x[m]
            xb = x[m + 1]
            a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = np.float32(0.0)
            for k in range(depth):
                u = xa[k]
                v = xb[k]
                c0, c1, c2, c3 = w0[k], w1[k], w2[k], w3[k]
                a0 += u * c0
                a1 += u * c1
                a2 += u * c2
                a3 += u * c3
                b0 += v * c0
                b1 += v * c1
                b2 += v * c2
                b3 += v * c3
            out[m, n], out[m, n + 1], out[m, n + 2], out[m, n + 3] = a0, a1, a2, a3
            out[m + 1, n], out[m + 1, n + 1], out[m + 1, n + 2], out[m + 1, n + 3] = b0, b1, b2, b3
            m += 2
        if m < rows:
            _dots(x, w, out, m, n)
        n += 4
    for col in range(n, last):  # the last few columns when n is not a multiple of 4
        wc = w[col]
        for m in range(rows):
            total = np.float32(0.0)
            for k in range(depth):
                total += x[m, k] * wc[k]
            out[m, col] = total


@numba.njit(**_JIT)
def add_bias(x: Any, bias: Any) -> None:  # pragma: no cover - compiled
    rows, cols = x.shape
    for i in range(rows):
        row = x[i]
        for j in range(cols):
            row[j] += bias[j]


@numba.njit(**_JIT)
def _normalize_row(src: Any, weight: Any, beta: Any, eps: float, dst: Any) -> None:
    cols = src.shape[0]
    total = np.float32(0.0)
    for j in range(cols):
        total += src[j]
    mean = total / np.float32(cols)
    var = np.float32(0.0)
    for j in range(cols):
        d = src[j] - mean
        var += d * d
    inv = _ONE / np.sqrt(var / np.float32(cols) + np.float32(eps))
    for j in range(cols):
        dst[j] = (src[j] - mean) * inv * weight[j] + beta[j]


@numba.njit(**_JIT)
def layer_norm(x: Any, weight: Any, beta: Any, eps: float, out: Any) -> None:  # pragma: no cover
    for i in range(x.shape[0]):
        _normalize_row(x[i], weight, beta, eps, out[i])


@numba.njit(**_JIT)
def bias_residual_layer_norm(
    x: Any, bias: Any, residual: Any, weight: Any, beta: Any, eps: float, out: Any
) -> None:  # pragma: no cover - compiled
    rows, cols = x.shape
    for i in range(rows):
        row = x[i]
        res = residual[i]
        for j in range(cols):
            row[j] += bias[j] + res[j]
        _normalize_row(row, weight, beta, eps, out[i])


@numba.njit(**_JIT)
def embed(
    ids: Any,
    positions: Any,
    word: Any,
    position: Any,
    token_type: Any,
    weight: Any,
    beta: Any,
    eps: float,
    out: Any,
) -> None:  # pragma: no cover - compiled
    tokens = ids.shape[0]
    cols = word.shape[1]
    for t in range(tokens):
        row = out[t]
        w = word[ids[t]]
        p = position[positions[t]]
        for j in range(cols):
            row[j] = w[j] + p[j] + token_type[j]
        _normalize_row(row, weight, beta, eps, row)


@numba.njit(**_JIT)
def subtract_row_max(x: Any) -> None:  # pragma: no cover - compiled
    """The first step of a stable softmax; NumPy's SIMD ``exp`` runs next, in place."""
    rows, cols = x.shape
    for i in range(rows):
        row = x[i]
        top = row[0]
        for j in range(1, cols):
            top = max(top, row[j])
        for j in range(cols):
            row[j] -= top


@numba.njit(**_JIT)
def exp_rows_normalize(x: Any) -> None:  # pragma: no cover - compiled
    """Divide each row (already exponentiated) by its sum."""
    rows, cols = x.shape
    for i in range(rows):
        row = x[i]
        total = np.float32(0.0)
        for j in range(cols):
            total += row[j]
        inv = _ONE / total
        for j in range(cols):
            row[j] *= inv


@numba.njit(**_JIT)
def mean_pool(
    hidden: Any, offsets: Any, lengths: Any, normalize: bool, out: Any
) -> None:  # pragma: no cover - compiled
    sequences = offsets.shape[0]
    cols = hidden.shape[1]
    for i in range(sequences):
        acc = out[i]
        for j in range(cols):
            acc[j] = 0.0
        start = offsets[i]
        n = lengths[i]
        for t in range(start, start + n):
            row = hidden[t]
            for j in range(cols):
                acc[j] += row[j]
        scale = _ONE / np.float32(max(n, 1))
        norm = np.float32(0.0)
        for j in range(cols):
            acc[j] *= scale
            norm += acc[j] * acc[j]
        if normalize:
            inv = _ONE / max(np.sqrt(norm), np.float32(1e-12))
            for j in range(cols):
                acc[j] *= inv
