"""The first pass of a large search: int8 dot products over every candidate row.

A brute-force float32 scan of 100,000 x 384 vectors reads 154 MB per query and is
memory bound (7.6 to 16 ms on the 2-core development machine, depending on load). Each
row is also kept quantised to int8 with its own scale (``row ~= scale * codes``), a
quarter of the bytes; a Numba loop over those takes about 2.5 ms for the same rows. The
pass only picks candidates: the collection rescores the best few hundred exactly, in
float64, from the float32 rows, so results and scores are exact unless a true top-k row
ranks below every candidate, which the margin makes vanishingly rare (recall@10 measured
at 1.0 on random unit vectors, the hardest case: their scores bunch together).

Small selections skip the int8 pass and take exact float32 dot products, also here:
BLAS would spread one matrix-vector product over its thread pool, and waking those
threads on a busy 2-core machine was measured to cost up to 8 ms for a 10,000-row
product that takes 0.1 ms on one thread.

Kernels are single-threaded and release the GIL: concurrent searches run side by side
on the cores instead of fighting over one thread pool.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

__all__ = ["dots_all", "dots_rows", "quantize", "scan_all", "scan_rows"]

_JIT: dict[str, Any] = {"nogil": True, "fastmath": True, "cache": True, "error_model": "numpy"}


def quantize(
    vectors: NDArray[np.float32],
) -> tuple[NDArray[np.int8], NDArray[np.float32]]:
    """Each row as int8 codes and a scale, ``row ~= scale * codes`` (symmetric, per row)."""
    peak = np.abs(vectors).max(axis=1) if vectors.shape[1] else np.zeros(len(vectors))
    scales = (peak / 127.0).astype(np.float32)
    scales[scales == 0] = 1.0
    codes = np.rint(vectors / scales[:, None]).astype(np.int8)
    return codes, scales


@numba.njit(**_JIT)
def _scan_all(
    codes: NDArray[np.int8],
    scales: NDArray[np.float32],
    query: NDArray[np.int8],
    rows: int,
    out: NDArray[np.float32],
) -> None:
    dim = codes.shape[1]
    for i in range(rows):
        acc = np.int32(0)
        for j in range(dim):
            acc += np.int32(codes[i, j]) * np.int32(query[j])
        out[i] = np.float32(acc) * scales[i]


@numba.njit(**_JIT)
def _scan_rows(
    codes: NDArray[np.int8],
    scales: NDArray[np.float32],
    query: NDArray[np.int8],
    rows: NDArray[np.intp],
    out: NDArray[np.float32],
) -> None:
    dim = codes.shape[1]
    for k in range(rows.shape[0]):
        i = rows[k]
        acc = np.int32(0)
        for j in range(dim):
            acc += np.int32(codes[i, j]) * np.int32(query[j])
        out[k] = np.float32(acc) * scales[i]


@numba.njit(**_JIT)
def _dots_all(
    matrix: NDArray[np.float32], query: NDArray[np.float32], rows: int, out: NDArray[np.float32]
) -> None:
    dim = matrix.shape[1]
    for i in range(rows):
        acc = np.float32(0.0)
        for j in range(dim):
            acc += matrix[i, j] * query[j]
        out[i] = acc


@numba.njit(**_JIT)
def _dots_rows(
    matrix: NDArray[np.float32],
    query: NDArray[np.float32],
    rows: NDArray[np.intp],
    out: NDArray[np.float32],
) -> None:
    dim = matrix.shape[1]
    for k in range(rows.shape[0]):
        i = rows[k]
        acc = np.float32(0.0)
        for j in range(dim):
            acc += matrix[i, j] * query[j]
        out[k] = acc


def dots_all(
    matrix: NDArray[np.float32], query: NDArray[np.float32], rows: int
) -> NDArray[np.float32]:
    """Exact float32 ``row . query`` for the first ``rows`` rows."""
    out = np.empty(rows, dtype=np.float32)
    _dots_all(matrix, query, rows, out)
    return out


def dots_rows(
    matrix: NDArray[np.float32], query: NDArray[np.float32], rows: NDArray[np.intp]
) -> NDArray[np.float32]:
    """Exact float32 ``row . query`` for the given rows, in their order."""
    out = np.empty(len(rows), dtype=np.float32)
    _dots_rows(matrix, query, rows, out)
    return out


def _query_codes(query: NDArray[np.float32]) -> tuple[NDArray[np.int8], float]:
    codes, scales = quantize(query[None, :])
    return codes[0], float(scales[0])


def scan_all(
    codes: NDArray[np.int8], scales: NDArray[np.float32], query: NDArray[np.float32], rows: int
) -> NDArray[np.float32]:
    """Approximate ``row . query`` for the first ``rows`` rows."""
    query_codes, query_scale = _query_codes(query)
    out = np.empty(rows, dtype=np.float32)
    _scan_all(codes, scales, query_codes, rows, out)
    out *= np.float32(query_scale)
    return out


def scan_rows(
    codes: NDArray[np.int8],
    scales: NDArray[np.float32],
    query: NDArray[np.float32],
    rows: NDArray[np.intp],
) -> NDArray[np.float32]:
    """Approximate ``row . query`` for the given rows, in their order."""
    query_codes, query_scale = _query_codes(query)
    out = np.empty(len(rows), dtype=np.float32)
    _scan_rows(codes, scales, query_codes, rows, out)
    out *= np.float32(query_scale)
    return out
