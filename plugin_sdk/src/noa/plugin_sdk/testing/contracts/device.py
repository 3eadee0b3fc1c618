"""The contract every ``noa.drivers.device`` driver passes.

Subclass :class:`DeviceContract` and implement :meth:`~DeviceContract.make_driver`; mark
the subclass ``gpu`` when it needs one. Every kernel is checked against a float64 NumPy
reference to within 1e-4. The suite skips when NumPy is not installed, and when the
driver says its device is not available here.

The encoder kernels are driven the way an encoder drives them: inputs go in through
``to_device``, results land in buffers from ``empty`` and come back through ``to_host``,
so the same tests run on host and device memory alike.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterator
from typing import Any

import pytest
from noa.plugin_sdk.ports.device import DevicePort

__all__ = ["DeviceContract"]

TOLERANCE = 1e-4
#: Packed sequences of the attention and pooling tests: one token, a short one, and one
#: longer than a warp, so a kernel's per-sequence bounds are exercised.
LENGTHS = (1, 7, 33)


class DeviceContract(abc.ABC):
    """Behaviour shared by every device driver."""

    @abc.abstractmethod
    def make_driver(self) -> DevicePort:
        """The driver under test."""

    @pytest.fixture
    def np(self) -> Any:
        return pytest.importorskip("numpy")

    def _available_driver(self) -> DevicePort:
        device = self.make_driver()
        if not device.is_available():
            pytest.skip(f"device {device.name!r} is not available here")
        return device

    @pytest.fixture
    def driver(self, np: Any) -> Iterator[DevicePort]:
        device = self._available_driver()
        yield device
        device.close()

    @pytest.fixture
    def rng(self, np: Any) -> Any:
        return np.random.default_rng(1234)

    def _check(self, np: Any, got: Any, expected: Any) -> None:
        assert isinstance(got, np.ndarray)
        assert got.dtype == np.float32
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=TOLERANCE, atol=TOLERANCE)

    def test_satisfies_the_port(self, driver: DevicePort) -> None:
        assert isinstance(driver, DevicePort)
        assert isinstance(driver.name, str)
        assert driver.name

    @pytest.mark.parametrize(
        ("a_shape", "b_shape"), [((64, 128), (128, 32)), ((4, 8, 16), (16, 8)), ((1, 5), (5, 1))]
    )
    def test_matmul(
        self,
        driver: DevicePort,
        np: Any,
        rng: Any,
        a_shape: tuple[int, ...],
        b_shape: tuple[int, ...],
    ) -> None:
        a = rng.standard_normal(a_shape).astype(np.float32)
        b = rng.standard_normal(b_shape).astype(np.float32)
        expected = a.astype(np.float64) @ b.astype(np.float64)
        self._check(np, driver.matmul(a, b), expected)

    def test_matmul_refuses_mismatched_shapes(self, driver: DevicePort, np: Any) -> None:
        with pytest.raises(ValueError):  # noqa: PT011 - each backend words it differently
            driver.matmul(np.ones((2, 3), np.float32), np.ones((4, 2), np.float32))

    @pytest.mark.parametrize("eps", [1e-5, 1e-12])
    def test_layer_norm(self, driver: DevicePort, np: Any, rng: Any, eps: float) -> None:
        x = (rng.standard_normal((8, 384)) * 3.0 + 1.0).astype(np.float32)
        weight = rng.standard_normal(384).astype(np.float32)
        bias = rng.standard_normal(384).astype(np.float32)
        expected = _layer_norm(np, x.astype(np.float64), weight, bias, eps)
        self._check(np, driver.layer_norm(x, weight, bias, eps), expected)

    def test_gelu_exact(self, driver: DevicePort, np: Any, rng: Any) -> None:
        x = np.concatenate([np.linspace(-8.0, 8.0, 2001), rng.standard_normal(1000) * 3.0]).astype(
            np.float32
        )
        erf = np.vectorize(math.erf)
        x64 = x.astype(np.float64)
        expected = 0.5 * x64 * (1.0 + erf(x64 / math.sqrt(2.0)))
        self._check(np, driver.gelu(x), expected)
        self._check(np, driver.gelu(x.reshape(3001, 1)), expected.reshape(3001, 1))

    def test_gelu_tanh(self, driver: DevicePort, np: Any) -> None:
        x = np.linspace(-8.0, 8.0, 2001).astype(np.float32)
        x64 = x.astype(np.float64)
        inner = math.sqrt(2.0 / math.pi) * (x64 + 0.044715 * x64**3)
        expected = 0.5 * x64 * (1.0 + np.tanh(inner))
        self._check(np, driver.gelu(x, approximate="tanh"), expected)

    @pytest.mark.parametrize("axis", [-1, 0, 1])
    def test_softmax(self, driver: DevicePort, np: Any, rng: Any, axis: int) -> None:
        x = (rng.standard_normal((4, 7, 33)) * 10.0).astype(np.float32)
        x64 = x.astype(np.float64)
        shifted = np.exp(x64 - x64.max(axis=axis, keepdims=True))
        expected = shifted / shifted.sum(axis=axis, keepdims=True)
        got = driver.softmax(x, axis=axis)
        self._check(np, got, expected)
        np.testing.assert_allclose(got.sum(axis=axis), 1.0, atol=TOLERANCE)

    def test_softmax_is_stable_for_large_inputs(self, driver: DevicePort, np: Any) -> None:
        x = np.array([[1000.0, 1001.0, 1002.0], [-1000.0, -1000.0, -1000.0]], np.float32)
        got = driver.softmax(x)
        assert np.isfinite(got).all()
        e = np.exp(np.array([-2.0, -1.0, 0.0]))
        self._check(np, got, np.stack([e / e.sum(), np.full(3, 1.0 / 3.0)]))

    def test_other_dtypes_come_back_as_float32(self, driver: DevicePort, np: Any) -> None:
        x = np.array([[0.5, -1.0], [2.0, 0.0]], dtype=np.float64)
        for out in (
            driver.matmul(x, x),
            driver.layer_norm(x, np.ones(2), np.zeros(2)),
            driver.gelu(x),
            driver.softmax(x),
        ):
            assert out.dtype == np.float32

    # Memory.

    def test_set_threads_keeps_results_the_same(
        self, driver: DevicePort, np: Any, rng: Any
    ) -> None:
        x = rng.standard_normal((100, 48)).astype(np.float32)
        w_t = rng.standard_normal((48, 40)).astype(np.float32)
        expected = x.astype(np.float64) @ w_t.astype(np.float64)
        for threads in (1, 2, 0):
            driver.set_threads(threads)
            out = driver.empty((100, 40))
            driver.gemm(driver.to_device(x), driver.prepare_weight(w_t), out)
            self._check(np, driver.to_host(out), expected)

    def test_close_releases_a_used_driver(self, np: Any, rng: Any) -> None:
        device = self._available_driver()
        device.set_threads(2)
        x = device.to_device(rng.standard_normal((64, 8)))
        device.add_bias(x, device.to_device(np.ones(8)))
        device.synchronize()
        device.close()

    @pytest.mark.parametrize("dtype", ["float32", "int32"])
    def test_to_device_and_back(self, driver: DevicePort, np: Any, rng: Any, dtype: str) -> None:
        host = (rng.standard_normal((5, 7)) * 100.0).astype(dtype)
        on_device = driver.to_device(host.astype(np.float64), dtype)
        host[0, 0] += 1  # the device copy is a copy
        driver.synchronize()
        back = driver.to_host(on_device)
        assert isinstance(back, np.ndarray)
        assert back.dtype == np.dtype(dtype)
        host[0, 0] -= 1
        np.testing.assert_array_equal(back, host)
        back[...] = 0  # and so is the host one
        np.testing.assert_array_equal(driver.to_host(on_device), host)

    @pytest.mark.parametrize("dtype", ["float32", "int32"])
    def test_empty(self, driver: DevicePort, np: Any, dtype: str) -> None:
        buffer = driver.empty((3, 4), dtype)
        filled = driver.to_host(buffer)
        assert filled.shape == (3, 4)
        assert filled.dtype == np.dtype(dtype)
        assert driver.to_host(driver.empty((3, 4))).dtype == np.float32

    # Encoder kernels.

    @pytest.mark.parametrize(("m", "k", "n"), [(1, 5, 1), (100, 64, 48), (33, 384, 1152)])
    def test_gemm(self, driver: DevicePort, np: Any, rng: Any, m: int, k: int, n: int) -> None:
        x = rng.standard_normal((m, k)).astype(np.float32)
        w_t = rng.standard_normal((k, n)).astype(np.float32)
        out = driver.empty((m, n))
        driver.gemm(driver.to_device(x), driver.prepare_weight(w_t), out)
        self._check(np, driver.to_host(out), x.astype(np.float64) @ w_t.astype(np.float64))

    def test_gemm_writes_only_the_rows_of_its_slice(
        self, driver: DevicePort, np: Any, rng: Any
    ) -> None:
        # The encoder's buffers are sized for the largest batch and sliced per batch.
        x = rng.standard_normal((10, 16)).astype(np.float32)
        w_t = rng.standard_normal((16, 12)).astype(np.float32)
        buffer = driver.to_device(np.zeros((15, 12)))
        driver.gemm(driver.to_device(x), driver.prepare_weight(w_t), buffer[:10])
        got = driver.to_host(buffer)
        self._check(np, got[:10], x.astype(np.float64) @ w_t.astype(np.float64))
        np.testing.assert_array_equal(got[10:], 0.0)

    @pytest.mark.parametrize("eps", [1e-12, 1e-5])
    def test_embed(self, driver: DevicePort, np: Any, rng: Any, eps: float) -> None:
        vocab, max_positions, width = 50, 40, 48
        word = rng.standard_normal((vocab, width)).astype(np.float32)
        position = rng.standard_normal((max_positions, width)).astype(np.float32)
        token_type = rng.standard_normal(width).astype(np.float32)
        weight = rng.standard_normal(width).astype(np.float32)
        bias = rng.standard_normal(width).astype(np.float32)
        tokens = sum(LENGTHS)
        ids = rng.integers(0, vocab, tokens).astype(np.int32)
        positions = np.concatenate([np.arange(n) for n in LENGTHS]).astype(np.int32)

        d = driver.to_device
        out = driver.empty((tokens, width))
        driver.embed(
            d(ids, "int32"),
            d(positions, "int32"),
            d(word),
            d(position),
            d(token_type),
            d(weight),
            d(bias),
            eps,
            out,
        )
        summed = word.astype(np.float64)[ids] + position[positions] + token_type
        self._check(np, driver.to_host(out), _layer_norm(np, summed, weight, bias, eps))

    def test_add_bias(self, driver: DevicePort, np: Any, rng: Any) -> None:
        x = rng.standard_normal((600, 96)).astype(np.float32)
        bias = rng.standard_normal(96).astype(np.float32)
        on_device = driver.to_device(x)
        driver.add_bias(on_device, driver.to_device(bias))
        self._check(np, driver.to_host(on_device), x.astype(np.float64) + bias)

    def test_bias_gelu(self, driver: DevicePort, np: Any, rng: Any) -> None:
        x = (rng.standard_normal((600, 64)) * 3.0).astype(np.float32)
        x[:32] = np.linspace(-8.0, 8.0, 32 * 64).reshape(32, 64)  # the tails too
        bias = (rng.standard_normal(64) * 0.1).astype(np.float32)
        on_device = driver.to_device(x)
        driver.bias_gelu(on_device, driver.to_device(bias))
        v = x.astype(np.float64) + bias
        erf = np.vectorize(math.erf)
        self._check(np, driver.to_host(on_device), 0.5 * v * (1.0 + erf(v / math.sqrt(2.0))))

    @pytest.mark.parametrize("into_residual", [False, True], ids=["new-out", "out-is-residual"])
    def test_bias_residual_layer_norm(
        self, driver: DevicePort, np: Any, rng: Any, into_residual: bool
    ) -> None:
        rows, width, eps = 300, 384, 1e-12
        x = (rng.standard_normal((rows, width)) * 2.0).astype(np.float32)
        bias = rng.standard_normal(width).astype(np.float32)
        residual = (rng.standard_normal((rows, width)) + 0.5).astype(np.float32)
        weight = rng.standard_normal(width).astype(np.float32)
        beta = rng.standard_normal(width).astype(np.float32)
        expected = _layer_norm(np, x.astype(np.float64) + bias + residual, weight, beta, eps)

        d = driver.to_device
        residual_on_device = d(residual)
        out = residual_on_device if into_residual else driver.empty((rows, width))
        driver.bias_residual_layer_norm(
            d(x), d(bias), residual_on_device, d(weight), d(beta), eps, out
        )
        self._check(np, driver.to_host(out), expected)

    @pytest.mark.parametrize("on_device", [False, True], ids=["host-offsets", "device-offsets"])
    def test_attention_keeps_each_sequence_to_itself(
        self, driver: DevicePort, np: Any, rng: Any, on_device: bool
    ) -> None:
        heads, head_width = 4, 8
        width = heads * head_width
        tokens = sum(LENGTHS)
        qkv = rng.standard_normal((tokens, 3 * width)).astype(np.float32)
        qkv[:, :width] *= np.float32(1.0 / math.sqrt(head_width))  # queries come scaled
        qkv[:, :width] *= 4.0  # and peaked enough that a stray key would show
        lengths = np.asarray(LENGTHS, np.int32)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int32)

        expected = np.empty((tokens, width))
        q64 = qkv.astype(np.float64)
        for start, n in zip(offsets, lengths, strict=True):
            block = q64[start : start + n]
            for h in range(heads):
                cols = slice(h * head_width, (h + 1) * head_width)
                q = block[:, :width][:, cols]
                k = block[:, width : 2 * width][:, cols]
                v = block[:, 2 * width :][:, cols]
                scores = q @ k.T
                p = np.exp(scores - scores.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                expected[start : start + n, cols] = p @ v

        out = driver.empty((tokens, width))
        if on_device:
            offsets, lengths = (
                driver.to_device(offsets, "int32"),
                driver.to_device(lengths, "int32"),
            )
        driver.attention(driver.to_device(qkv), offsets, lengths, heads, out)
        self._check(np, driver.to_host(out), expected)

    @pytest.mark.parametrize("normalize", [False, True], ids=["mean", "mean-normalized"])
    def test_mean_pool(self, driver: DevicePort, np: Any, rng: Any, normalize: bool) -> None:
        width = 40
        tokens = sum(LENGTHS)
        hidden = (rng.standard_normal((tokens, width)) + 0.25).astype(np.float32)
        lengths = np.asarray(LENGTHS, np.int32)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int32)
        h64 = hidden.astype(np.float64)
        expected = np.stack(
            [h64[s : s + n].mean(axis=0) for s, n in zip(offsets, lengths, strict=True)]
        )
        if normalize:
            expected /= np.linalg.norm(expected, axis=1, keepdims=True)

        out = driver.empty((len(LENGTHS), width))
        driver.mean_pool(driver.to_device(hidden), offsets, lengths, normalize, out)
        got = driver.to_host(out)
        self._check(np, got, expected)
        if normalize:
            np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=TOLERANCE)


def _layer_norm(np: Any, x: Any, weight: Any, bias: Any, eps: float) -> Any:
    """The float64 reference: biased variance over the last axis, then scale and shift."""
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias
