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
