"""The contract every ``noa.drivers.device`` driver passes.

Subclass :class:`DeviceContract` and implement :meth:`~DeviceContract.make_driver`; mark
the subclass ``gpu`` when it needs one. Every kernel is checked against a float64 NumPy
reference to within 1e-4. The suite skips when NumPy is not installed, and when the
driver says its device is not available here.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import pytest
from noa.plugin_sdk.ports.device import DevicePort

__all__ = ["DeviceContract"]

TOLERANCE = 1e-4


class DeviceContract(abc.ABC):
    """Behaviour shared by every device driver."""

    @abc.abstractmethod
    def make_driver(self) -> DevicePort:
        """The driver under test."""

    @pytest.fixture
    def np(self) -> Any:
        return pytest.importorskip("numpy")

    @pytest.fixture
    def driver(self, np: Any) -> DevicePort:
        device = self.make_driver()
        if not device.is_available():
            pytest.skip(f"device {device.name!r} is not available here")
        return device

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
        x64 = x.astype(np.float64)
        mean = x64.mean(axis=-1, keepdims=True)
        var = x64.var(axis=-1, keepdims=True)
        expected = (x64 - mean) / np.sqrt(var + eps) * weight + bias
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
