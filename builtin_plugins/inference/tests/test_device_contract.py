"""The device drivers pass the SDK's device contract; ``auto`` falls back to the CPU.

The CUDA suite needs CuPy and a GPU and skips, saying which is missing, without them.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from noa.builtin_plugins.inference import devices
from noa.builtin_plugins.inference.cpu_device import CpuDevice
from noa.builtin_plugins.inference.cuda_device import CudaDevice
from noa.plugin_sdk.ports.device import DevicePort
from noa.plugin_sdk.testing.contracts import DeviceContract


class TestCpuDevice(DeviceContract):
    def make_driver(self) -> DevicePort:
        return CpuDevice()


@pytest.mark.gpu
class TestCudaDevice(DeviceContract):
    def make_driver(self) -> DevicePort:
        pytest.importorskip("cupy", reason="CuPy is not installed (noa-plugin-inference[cuda])")
        device = CudaDevice()
        if not device.is_available():
            pytest.skip(f"no usable CUDA device here: {device.unavailable_reason}")
        return device


def test_auto_device_is_the_cpu_without_a_gpu() -> None:
    if CudaDevice().is_available():
        pytest.skip("a CUDA device is usable here, so auto picks it")
    device = devices.auto_device()
    assert isinstance(device, CpuDevice)
    assert device.name == "cpu"
    device.close()


def test_auto_device_falls_back_when_cuda_is_unusable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CudaDevice, "is_available", lambda self: False)
    device = devices.auto_device()
    assert device.name == "cpu"
    device.close()


def test_auto_device_falls_back_when_cuda_fails_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: CudaDevice) -> None:
        raise RuntimeError("driver exploded")

    monkeypatch.setattr(CudaDevice, "__init__", broken)
    assert devices.auto_device().name == "cpu"


def test_cuda_module_imports_and_declines_without_cupy() -> None:
    # CuPy made unimportable even where it is installed: the driver module still
    # imports, the driver says it is unavailable (and why), and auto picks the CPU.
    code = (
        "import sys\n"
        "class NoCupy:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'cupy': raise ImportError('no cupy here')\n"
        "sys.meta_path.insert(0, NoCupy())\n"
        "from noa.builtin_plugins.inference.cuda_device import CudaDevice\n"
        "from noa.builtin_plugins.inference.devices import auto_device\n"
        "device = CudaDevice()\n"
        "assert device.is_available() is False\n"
        "assert 'cupy' in device.unavailable_reason.lower(), device.unavailable_reason\n"
        "assert auto_device().name == 'cpu'\n"
        "assert 'cupy' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
