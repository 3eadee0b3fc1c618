"""The compute-type switch of CuPy's products, which the ``cuda`` driver pins to FP32.

The emulator's products are NumPy's float32 ones whatever is set; the switch is kept so
the driver's "TF32 stays off" check runs its real path.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

__all__ = [
    "COMPUTE_TYPE_DEFAULT",
    "COMPUTE_TYPE_FP32",
    "COMPUTE_TYPE_TF32",
    "get_compute_type",
    "set_compute_type",
]

COMPUTE_TYPE_DEFAULT = 1
COMPUTE_TYPE_FP32 = 4
COMPUTE_TYPE_TF32 = 7

_compute_types: dict[str, int] = {}


def set_compute_type(dtype: DTypeLike, compute_type: int) -> None:
    _compute_types[np.dtype(dtype).name] = compute_type


def get_compute_type(dtype: DTypeLike) -> int:
    return _compute_types.get(np.dtype(dtype).name, COMPUTE_TYPE_DEFAULT)
