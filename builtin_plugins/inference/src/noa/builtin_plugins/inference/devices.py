"""The ``auto`` device: CUDA when a GPU is really usable here, else the CPU."""

from __future__ import annotations

import logging

from noa.plugin_sdk.ports.device import DevicePort

__all__ = ["auto_device"]

log = logging.getLogger("noa.inference")


def auto_device() -> DevicePort:
    """A CUDA device when CuPy is installed and a kernel runs on a GPU, else the CPU one."""
    try:
        from noa.builtin_plugins.inference.cuda_device import CudaDevice

        cuda = CudaDevice()
        if cuda.is_available():
            return cuda
    except Exception as exc:  # CuPy missing or broken: the CPU serves
        log.debug("cuda device unusable: %s: %s", type(exc).__name__, exc)
    from noa.builtin_plugins.inference.cpu_device import CpuDevice

    return CpuDevice()
