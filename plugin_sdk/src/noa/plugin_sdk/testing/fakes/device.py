"""``NumpyDevice``: the reference :class:`~noa.plugin_sdk.ports.DevicePort`, on the CPU.

NumPy is imported when a kernel first runs, not when this module is, so the SDK stays
importable without it. Its device arrays are NumPy arrays; every kernel is written as
plainly as NumPy allows, for reading rather than speed.
"""

from __future__ import annotations

import importlib.util
import math
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import ArrayLike, NDArray

__all__ = ["NumpyDevice"]

# Abramowitz and Stegun 7.1.26: erf to 1.5e-7, as NumPy has no erf of its own.
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


class NumpyDevice:
    """The ``cpu`` device: float32 kernels in NumPy."""

    name = "cpu"

    def is_available(self) -> bool:
        return importlib.util.find_spec("numpy") is not None

    def set_threads(self, threads: int) -> None:
        return None  # NumPy's own BLAS decides

    def close(self) -> None:
        return None

    def matmul(self, a: ArrayLike, b: ArrayLike) -> NDArray[np.float32]:
        import numpy as np

        return _f32(np.matmul(_f32(a), _f32(b)))

    def layer_norm(
        self, x: ArrayLike, weight: ArrayLike, bias: ArrayLike, eps: float = 1e-5
    ) -> NDArray[np.float32]:
        import numpy as np

        x32 = _f32(x)
        mean = x32.mean(axis=-1, keepdims=True)
        centred = x32 - mean
        var = np.mean(centred * centred, axis=-1, keepdims=True)
        normed = centred / np.sqrt(var + np.float32(eps))
        return _f32(normed * _f32(weight) + _f32(bias))

    def gelu(
        self, x: ArrayLike, *, approximate: Literal["none", "tanh"] = "none"
    ) -> NDArray[np.float32]:
        import numpy as np

        x32 = _f32(x)
        half = np.float32(0.5)
        if approximate == "tanh":
            inner = np.float32(math.sqrt(2.0 / math.pi)) * (x32 + np.float32(0.044715) * x32**3)
            return _f32(half * x32 * (np.float32(1.0) + np.tanh(inner)))
        if approximate != "none":
            raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
        return _f32(half * x32 * (np.float32(1.0) + _erf(x32 / np.float32(math.sqrt(2.0)))))

    def softmax(self, x: ArrayLike, axis: int = -1) -> NDArray[np.float32]:
        import numpy as np

        x32 = _f32(x)
        shifted = np.exp(x32 - x32.max(axis=axis, keepdims=True))
        return _f32(shifted / shifted.sum(axis=axis, keepdims=True))

    # Memory: host memory is device memory.

    def empty(self, shape: tuple[int, ...], dtype: str = "float32") -> NDArray[Any]:
        import numpy as np

        return np.empty(shape, dtype=dtype)

    def to_device(self, host: ArrayLike, dtype: str = "float32") -> NDArray[Any]:
        import numpy as np

        return np.array(host, dtype=dtype, order="C")

    def to_host(self, array: NDArray[Any]) -> NDArray[Any]:
        import numpy as np

        return np.array(array)

    def synchronize(self) -> None:
        return None

    # Encoder kernels.

    def prepare_weight(self, w_t: ArrayLike) -> NDArray[np.float32]:
        return self.to_device(w_t)

    def gemm(self, x: NDArray[np.float32], w_t: NDArray[np.float32], out: NDArray[Any]) -> None:
        import numpy as np

        np.matmul(x, w_t, out=out)

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
        out[...] = self.layer_norm(word[ids] + position[positions] + token_type, weight, bias, eps)

    def add_bias(self, x: NDArray[np.float32], bias: NDArray[np.float32]) -> None:
        x += bias

    def bias_gelu(self, x: NDArray[np.float32], bias: NDArray[np.float32]) -> None:
        x[...] = self.gelu(x + bias)

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
        # The sum is a new array, so ``out`` may be ``residual``.
        out[...] = self.layer_norm(x + bias + residual, weight, beta, eps)

    def attention(
        self,
        qkv: NDArray[np.float32],
        offsets: ArrayLike,
        lengths: ArrayLike,
        heads: int,
        out: NDArray[np.float32],
    ) -> None:
        import numpy as np

        width = out.shape[1]
        if qkv.shape != (out.shape[0], 3 * width) or width % heads:
            raise ValueError(f"qkv {qkv.shape} does not fit out {out.shape} with {heads} heads")
        head = width // heads
        for start, n in zip(
            np.asarray(offsets).tolist(), np.asarray(lengths).tolist(), strict=True
        ):
            # (heads, n, head): one sequence's queries, keys and values, head by head.
            q, k, v = (
                qkv[start : start + n, part * width : (part + 1) * width]
                .reshape(n, heads, head)
                .transpose(1, 0, 2)
                for part in range(3)
            )
            weights = self.softmax(q @ k.transpose(0, 2, 1))
            out[start : start + n] = (weights @ v).transpose(1, 0, 2).reshape(n, width)

    def mean_pool(
        self,
        hidden: NDArray[np.float32],
        offsets: ArrayLike,
        lengths: ArrayLike,
        normalize: bool,
        out: NDArray[np.float32],
    ) -> None:
        import numpy as np

        for i, (start, n) in enumerate(
            zip(np.asarray(offsets).tolist(), np.asarray(lengths).tolist(), strict=True)
        ):
            out[i] = hidden[start : start + n].mean(axis=0) if n else 0.0
        if normalize:
            norms = np.sqrt(np.sum(out * out, axis=1, keepdims=True))
            out /= np.maximum(norms, np.float32(1e-12))


def _f32(x: ArrayLike) -> NDArray[np.float32]:
    # No copy when ``x`` is already a float32 array.
    import numpy as np

    return np.asarray(x, dtype=np.float32)


def _erf(x: NDArray[np.float32]) -> NDArray[np.float32]:
    import numpy as np

    sign = np.sign(x)
    ax = np.abs(x)
    t = np.float32(1.0) / (np.float32(1.0) + np.float32(_ERF_P) * ax)
    poly = np.zeros_like(ax)
    for coefficient in reversed(_ERF_A):
        poly = (poly + np.float32(coefficient)) * t
    return _f32(sign * (np.float32(1.0) - poly * np.exp(-ax * ax)))
