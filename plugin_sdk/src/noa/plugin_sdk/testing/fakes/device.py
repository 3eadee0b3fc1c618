"""``NumpyDevice``: the reference :class:`~noa.plugin_sdk.ports.DevicePort`, on the CPU.

NumPy is imported when a kernel first runs, not when this module is, so the SDK stays
importable without it.
"""

from __future__ import annotations

import importlib.util
import math
from typing import TYPE_CHECKING, Literal

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
