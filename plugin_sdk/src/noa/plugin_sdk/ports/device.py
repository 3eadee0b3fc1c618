"""The ``device`` driver slot: the compute device inference runs its kernels on.

Drivers (``cpu``, ``cuda``) register in the entry-point group ``noa.drivers.device``;
only the chosen one is imported, so CuPy is never imported unless ``cuda`` is chosen.
Inputs and outputs are NumPy ``float32`` arrays on the host (inputs of another dtype are
converted); a GPU driver copies in and out. Results must match a float64 reference to
1e-4, so a GPU driver keeps full float32 precision (no TF32).

The SDK itself depends on neither NumPy nor CuPy: NumPy appears here only for type
checking, and a driver imports what it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import ArrayLike, NDArray

__all__ = ["DevicePort"]


@runtime_checkable
class DevicePort(Protocol):
    """The few kernels a transformer encoder needs.

    ``name`` is the driver's device kind (``"cpu"``, ``"cuda"``). Shapes follow NumPy;
    incompatible shapes raise ``ValueError``.
    """

    name: str

    def is_available(self) -> bool:
        """Whether this device can run here (a CUDA driver without a GPU answers False)."""
        ...

    def matmul(self, a: ArrayLike, b: ArrayLike) -> NDArray[np.float32]:
        """``a @ b`` with NumPy's ``matmul`` broadcasting."""
        ...

    def layer_norm(
        self, x: ArrayLike, weight: ArrayLike, bias: ArrayLike, eps: float = 1e-5
    ) -> NDArray[np.float32]:
        """Normalise over the last axis (biased variance), then scale and shift."""
        ...

    def gelu(
        self, x: ArrayLike, *, approximate: Literal["none", "tanh"] = "none"
    ) -> NDArray[np.float32]:
        """GELU, exact (``x * Phi(x)``, the BERT form) or its tanh approximation (GPT-2)."""
        ...

    def softmax(self, x: ArrayLike, axis: int = -1) -> NDArray[np.float32]:
        """Softmax along ``axis``, stable for large inputs."""
        ...
