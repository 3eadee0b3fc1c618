"""The ``device`` driver slot: the compute device inference runs its kernels on.

Drivers (``cpu``, ``cuda``) register in the entry-point group ``noa.drivers.device``;
only the chosen one is imported, so CuPy is never imported unless ``cuda`` is chosen.

Two layers:

* functional kernels (:meth:`DevicePort.matmul`, ``layer_norm``, ``gelu``, ``softmax``)
  take and return NumPy ``float32`` arrays on the host (inputs of another dtype are
  converted); a GPU driver copies in and out. They are for tests and small jobs.
* the encoder kernels work on the device's own arrays (NumPy on the CPU, CuPy on a GPU),
  write into buffers the caller allocated once with :meth:`DevicePort.empty`, and never
  allocate on the hot path. A transformer encoder is written once against them and runs
  on every device.

Tokens are *packed*: a batch of sequences is one ``(tokens, width)`` matrix, sequence
``i`` occupying rows ``offsets[i] : offsets[i] + lengths[i]``; no padding is computed.

Results must match a float64 reference to 1e-4, so a GPU driver keeps full float32
precision (no TF32). The SDK itself depends on neither NumPy nor CuPy: NumPy appears
here only for type checking, and a driver imports what it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import ArrayLike, NDArray

__all__ = ["DevicePort"]

#: A device array: ``numpy.ndarray`` on the CPU, ``cupy.ndarray`` on a GPU.
Array = Any


@runtime_checkable
class DevicePort(Protocol):
    """The kernels a transformer encoder needs.

    ``name`` is the driver's device kind (``"cpu"``, ``"cuda"``). Shapes follow NumPy;
    incompatible shapes raise ``ValueError``.
    """

    name: str

    def is_available(self) -> bool:
        """Whether this device can run here (a CUDA driver without a GPU answers False)."""
        ...

    def set_threads(self, threads: int) -> None:
        """Use at most ``threads`` CPU threads for host-side work (0: one per core)."""
        ...

    def close(self) -> None:
        """Release this driver's threads and cached memory; it is not used again."""
        ...

    # Functional kernels: host arrays in, new host float32 arrays out.

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

    # Memory.

    def empty(self, shape: tuple[int, ...], dtype: str = "float32") -> Array:
        """An uninitialised device array (allocate once, then reuse)."""
        ...

    def to_device(self, host: ArrayLike, dtype: str = "float32") -> Array:
        """A device copy of a host array (weights at load time, token ids per batch)."""
        ...

    def to_host(self, array: Array) -> NDArray[Any]:
        """A host (NumPy) copy of a device array."""
        ...

    def synchronize(self) -> None:
        """Wait until queued device work is done (a no-op on the CPU)."""
        ...

    def prepare_weight(self, w_t: ArrayLike) -> Any:
        """A weight matrix ``w_t (k, n)`` made ready for :meth:`gemm`, at load time.

        The result is opaque: a device keeps it in whatever layout (or layouts) its
        products read fastest, as a BLAS library pre-packs its constant operand.
        """
        ...

    # Encoder kernels: device arrays, results written into ``out`` (or in place).

    def gemm(self, x: Array, w_t: Any, out: Array) -> None:
        """``out[:] = x @ w_t`` for 2-D ``x (m, k)`` and ``out (m, n)``; ``w_t`` is a
        ``(k, n)`` matrix as :meth:`prepare_weight` returned it."""
        ...

    def embed(
        self,
        ids: Array,
        positions: Array,
        word: Array,
        position: Array,
        token_type: Array,
        weight: Array,
        bias: Array,
        eps: float,
        out: Array,
    ) -> None:
        """Token embeddings: ``out[t] = LN(word[ids[t]] + position[positions[t]] +
        token_type)`` for packed tokens; ``ids``/``positions`` are int32 of length
        ``tokens``, ``token_type`` one row (all tokens of type 0)."""
        ...

    def add_bias(self, x: Array, bias: Array) -> None:
        """``x += bias`` in place, ``bias`` broadcast over the rows of ``x``."""
        ...

    def bias_gelu(self, x: Array, bias: Array) -> None:
        """``x = gelu(x + bias)`` (exact GELU) in place."""
        ...

    def bias_residual_layer_norm(
        self,
        x: Array,
        bias: Array,
        residual: Array,
        weight: Array,
        beta: Array,
        eps: float,
        out: Array,
    ) -> None:
        """``out = LN(x + bias + residual) * weight + beta`` over the last axis.

        ``out`` may be ``residual`` itself (the usual post-norm update).
        """
        ...

    def attention(self, qkv: Array, offsets: Array, lengths: Array, heads: int, out: Array) -> None:
        """Multi-head self-attention over packed sequences.

        ``qkv`` is ``(tokens, 3 * width)``: queries (already scaled by 1/sqrt(head
        width)), keys and values side by side, each ``heads`` heads wide. Each sequence
        attends only to its own tokens. ``out`` is ``(tokens, width)``; ``offsets`` and
        ``lengths`` are int32 (host arrays are accepted).
        """
        ...

    def mean_pool(
        self, hidden: Array, offsets: Array, lengths: Array, normalize: bool, out: Array
    ) -> None:
        """``out[i]`` = mean of sequence ``i``'s rows of ``hidden``, then scaled to unit
        L2 norm when ``normalize``. ``out`` is ``(sequences, width)``."""
        ...
