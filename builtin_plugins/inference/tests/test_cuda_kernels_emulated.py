"""The ``cuda`` device's CUDA C kernels, checked on the CPU by an emulator: no GPU runs here.

These are EMULATED runs. The real-GPU suite is ``TestCudaDevice`` in
``test_device_contract.py`` (marked ``gpu``); this one runs wherever g++ does, and checks
the kernels' logic and the driver's launches, not how a GPU executes them (see the
docstring of ``cuda_emulation/cupy`` for what the emulator cannot show).

The one test collected normally, :func:`test_cuda_kernels_on_the_cpu_emulator`, runs this
file again in a subprocess whose ``PYTHONPATH`` starts with ``cuda_emulation/``, where
``import cupy`` finds the emulator; this process never sees it. In there
(``NOA_CUDA_EMULATION=1``) the classes below exist and run:

- ``TestCudaDeviceContractEmulatedAscending`` / ``...Descending``: the SDK's device
  contract against :class:`CudaDevice`, once per emulator schedule (blocks, and threads
  between barriers, in index order, then in reverse);
- ``TestBertOnEmulatedCudaMatchesCpu``: a small random BERT encoded by both devices;
- ``TestTheCudaEmulatorCatchesKernelBugs``: the emulator fails kernels broken on purpose,
  so a pass above means something.

To run the emulated tests directly: ``NOA_CUDA_EMULATION=1
PYTHONPATH=builtin_plugins/inference/tests/cuda_emulation pytest <this file>``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from noa.builtin_plugins.inference import cuda_device
from noa.builtin_plugins.inference.bert import BertConfig, BertEncoder, _expected_shapes
from noa.builtin_plugins.inference.cpu_device import CpuDevice
from noa.builtin_plugins.inference.cuda_device import CudaDevice
from noa.builtin_plugins.inference.cuda_kernels import KERNELS
from noa.plugin_sdk.ports.device import DevicePort
from noa.plugin_sdk.testing.contracts import DeviceContract

EMULATION_PATH = Path(__file__).resolve().parent / "cuda_emulation"

INSIDE_THE_EMULATOR = os.environ.get("NOA_CUDA_EMULATION") == "1"
COMPILER = os.environ.get("NOA_CUDA_EMULATION_CXX", "g++")
ROOT = Path(__file__).resolve().parents[3]


if not INSIDE_THE_EMULATOR:

    @pytest.mark.slow
    @pytest.mark.skipif(
        shutil.which(COMPILER) is None,
        reason=f"{COMPILER} is not installed: the CPU emulator of the CUDA kernels needs it "
        "to compile them (apt install g++)",
    )
    def test_cuda_kernels_on_the_cpu_emulator(tmp_path_factory: pytest.TempPathFactory) -> None:
        paths = [str(EMULATION_PATH), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {
            **os.environ,
            "NOA_CUDA_EMULATION": "1",
            "PYTHONPATH": os.pathsep.join(paths),
            "NOA_CUDA_EMULATION_CACHE": str(tmp_path_factory.mktemp("cuda-emulation")),
        }
        command = [
            sys.executable,
            "-m",
            "pytest",
            __file__,
            "-q",
            "-rfEs",
            "-p",
            "no:cacheprovider",
        ]
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        output = done.stdout + done.stderr
        summary = output.strip().splitlines()[-1] if output.strip() else "(no output)"
        print(f"emulated CUDA suite: {summary}")
        assert done.returncode == 0, f"the emulated CUDA suite failed:\n{output[-20000:]}"
        outcomes = {word for _, word in re.findall(r"(\d+) (\w+)", summary)}
        assert outcomes == {"passed"}, f"only passes expected (no skips), got: {summary}"


if INSIDE_THE_EMULATOR:
    import cupy

    if not getattr(cupy, "IS_CPU_EMULATOR", False):
        raise RuntimeError(f"NOA_CUDA_EMULATION=1 but `import cupy` found {cupy.__file__}")
    from cupy import emulator

    class _CudaDeviceContractEmulated(DeviceContract):
        """The device contract against the cuda driver, on the CPU emulator."""

        schedule = "ascending"

        @pytest.fixture(autouse=True)
        def _in_schedule(self) -> Iterator[None]:
            with emulator.schedule(self.schedule):
                yield

        def make_driver(self) -> DevicePort:
            device = CudaDevice()
            if not device.is_available():
                pytest.fail(f"the emulated cuda device did not start: {device.unavailable_reason}")
            return device

    class TestCudaDeviceContractEmulatedAscending(_CudaDeviceContractEmulated):
        schedule = "ascending"

    class TestCudaDeviceContractEmulatedDescending(_CudaDeviceContractEmulated):
        schedule = "descending"

    class TestBertOnEmulatedCudaMatchesCpu:
        # Wider than a row block (256 threads) and with heads wider than an attention block
        # (128 threads) and one sequence longer than it, so every kernel's strided loops
        # run more than once; the contract's shapes cover the narrow cases.
        CONFIG = BertConfig(
            hidden_size=320,
            num_attention_heads=2,
            num_hidden_layers=2,
            intermediate_size=640,
            max_position_embeddings=160,
            vocab_size=120,
        )
        LENGTHS = (3, 130, 1, 9)

        def _encode(self, device: DevicePort, weights: dict[str, Any], ids: Any) -> list[Any]:
            lengths = np.asarray(self.LENGTHS, np.int32)
            encoder = BertEncoder(self.CONFIG, weights, device, max_tokens=256)
            # The second batch reuses the first one's buffers, stale rows and all.
            results = [
                encoder.encode(ids, lengths, normalize=True),
                encoder.encode(ids[: 3 + 130], lengths[:2], normalize=False),
            ]
            device.close()
            return results

        def test_matches_the_cpu_device_in_every_schedule(self) -> None:
            rng = np.random.default_rng(7)
            weights = {
                key: (
                    rng.standard_normal(shape) * (0.1 if len(shape) == 2 else 0.05)
                    + (1.0 if key.endswith("LayerNorm.weight") else 0.0)
                ).astype(np.float32)
                for key, shape in _expected_shapes(self.CONFIG).items()
            }
            ids = rng.integers(0, self.CONFIG.vocab_size, sum(self.LENGTHS)).astype(np.int32)
            expected = self._encode(CpuDevice(), weights, ids)
            emulated = {}
            for name in emulator.SCHEDULES:
                start = len(emulator.LAUNCHES)
                with emulator.schedule(name):
                    emulated[name] = self._encode(CudaDevice(), weights, ids)
                kernels = {launch.kernel for launch in emulator.LAUNCHES[start:]}
                assert kernels >= {
                    "noa_embed",
                    "noa_add_bias",
                    "noa_attention",
                    "noa_bias_residual_layer_norm",
                    "noa_bias_gelu",
                    "noa_mean_pool",
                }
                for want, got in zip(expected, emulated[name], strict=True):
                    assert got.dtype == np.float32 and got.shape == want.shape
                    difference = float(np.abs(got - want).max())
                    assert difference < 1e-4, f"{name}: max |cuda - cpu| = {difference}"
            # No thread's result depends on the order threads or blocks run in.
            for a, b in zip(*emulated.values(), strict=True):
                np.testing.assert_array_equal(a, b)

    # Kernels broken on purpose, each one way the emulator must catch.
    BROKEN = r"""
    extern "C" __global__ void half_return(float* x) {
        if (threadIdx.x >= 16) return;
        __syncthreads();
        x[threadIdx.x] = 1.0f;
    }
    extern "C" __global__ void split_barrier(float* x) {
        if (threadIdx.x % 2) {
            __syncthreads();
        } else {
            __syncthreads();
        }
        x[threadIdx.x] = 1.0f;
    }
    extern "C" __global__ void one_too_far(float* x, int n) {
        if ((int)threadIdx.x <= n) x[threadIdx.x] = 2.0f;
    }
    extern "C" __global__ void past_shared(float* x) {
        extern __shared__ float shared[];
        shared[threadIdx.x + 1] = x[threadIdx.x];
        __syncthreads();
        x[threadIdx.x] = shared[threadIdx.x];
    }
    """

    @pytest.fixture(scope="module")
    def broken() -> Any:
        return cupy.RawModule(code=BROKEN)

    class TestTheCudaEmulatorCatchesKernelBugs:
        def test_a_barrier_some_threads_skip(self, broken: Any) -> None:
            x = cupy.zeros(32, cupy.float32)
            with pytest.raises(emulator.EmulatedLaunchError, match="reached by 16 of 32 threads"):
                broken.get_function("half_return")((1,), (32,), (x,))

        def test_threads_at_different_barriers(self, broken: Any) -> None:
            x = cupy.zeros(32, cupy.float32)
            with pytest.raises(emulator.EmulatedLaunchError, match="different __syncthreads"):
                broken.get_function("split_barrier")((1,), (32,), (x,))

        def test_a_write_past_an_array(self, broken: Any) -> None:
            x = cupy.zeros(32, cupy.float32)[:8]  # the rest of the allocation is not x
            with pytest.raises(emulator.EmulatedLaunchError, match="'x' changed at byte 32"):
                broken.get_function("one_too_far")((1,), (32,), (x, np.int32(8)))

        def test_a_write_past_shared_memory(self, broken: Any) -> None:
            x = cupy.zeros(32, cupy.float32)
            with pytest.raises(emulator.EmulatedLaunchError, match="past the 128 bytes"):
                broken.get_function("past_shared")((1,), (32,), (x,), shared_mem=128)

        @pytest.mark.parametrize(
            ("args", "message"),
            [
                ((np.zeros(32, np.float32), np.int32(8)), "needs a device array"),
                ((None, np.int32(8)), "needs a device array"),
                (("float64", np.int32(8)), "needs float32 elements"),
                (("strided", np.int32(8)), "non-contiguous"),
                (("ok", 8), "needs numpy.int32, got int"),
                (("ok", np.int64(8)), "needs numpy.int32, got int64"),
                (("ok",), "takes 2 arguments"),
            ],
        )
        def test_arguments_a_gpu_would_misread(self, broken: Any, args: Any, message: str) -> None:
            arrays = {
                "ok": cupy.zeros(40, cupy.float32),
                "float64": cupy.zeros(40, cupy.float64),
                "strided": cupy.zeros((40, 2), cupy.float32).T[0],
            }
            args = tuple(arrays.get(a, a) if isinstance(a, str) else a for a in args)
            with pytest.raises((TypeError, ValueError), match=message):
                broken.get_function("one_too_far")((1,), (32,), args)

        def test_launch_limits(self, broken: Any) -> None:
            kernel, x = broken.get_function("half_return"), cupy.zeros(2048, cupy.float32)
            with pytest.raises(ValueError, match="more than 1024 threads"):
                kernel((1,), (64, 32), (x,))
            with pytest.raises(ValueError, match=r"outside 1\.\.65535"):
                kernel((1, 65536), (32,), (x,))
            with pytest.raises(ValueError, match="dynamic shared memory"):
                kernel((1,), (32,), (x,), shared_mem=48 * 1024 + 4)

        def test_a_missing_barrier_breaks_the_drivers_results(
            self, monkeypatch: pytest.MonkeyPatch
        ) -> None:
            # The first barrier of the block sum: without it a thread adds a partner's
            # slot before the partner has written it.
            barrier = "scratch[threadIdx.x] = value;\n    __syncthreads();"
            assert KERNELS.count(barrier) == 2  # block sum, then block max
            broken = KERNELS.replace(barrier, "scratch[threadIdx.x] = value;", 1)
            monkeypatch.setattr(cuda_device, "KERNELS", broken)
            x = np.random.default_rng(3).standard_normal((4, 300)).astype(np.float32)
            device = CudaDevice()
            assert device.is_available(), device.unavailable_reason
            with emulator.schedule("ascending"):
                got = device.softmax(x)
            assert not np.allclose(got.sum(axis=-1), 1.0, atol=1e-4, equal_nan=False)

        def test_host_and_device_arrays_do_not_mix(self) -> None:
            on_device = cupy.ones(3, cupy.float32)
            with pytest.raises(TypeError, match="Implicit conversion"):
                np.asarray(on_device)
            with pytest.raises(TypeError, match="host array cannot meet a device"):
                on_device + np.ones(3, np.float32)
            assert not isinstance(on_device, np.ndarray)
            np.testing.assert_array_equal(cupy.asnumpy(on_device * np.float32(2.0)), 2.0)
