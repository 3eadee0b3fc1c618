"""WASM call overhead: NOA's wasm host against the extism Python host SDK, same process.

The trivial plugin is a JSON echo (``ECHO`` of builtin_plugins/wasm/tests/wat.py, a WASI
command) for NOA and its equivalent against extism's kernel ABI (``EXTISM_ECHO`` below:
``output_set(input_offset(), input_length())``). The input is ``{"x": 1}``. Each figure
is the median of ``--rounds`` runs of ``--calls`` sequential calls, in µs per call and
calls/s. Scenarios:

* ``noa cold``: compile + link + instantiate + run, empty compiled-module cache.
* ``noa cold (signed cache)``: read the cache file, check its HMAC, deserialize,
  link, instantiate + run (what a restart costs per module).
* ``noa warm``: ``WasmHost.invoke_sync``, the Python API of other plugins: schema check,
  JSON encode, a fresh store + instance per call (of the plugin's ``InstancePre``),
  JSON decode and check.
* ``noa warm (sandbox only)``: ``Sandbox.run`` alone, no JSON or schema work.
* ``noa warm http``: ``POST /v1/plugins/echo/invoke`` through the test harness (the full
  ASGI app in process, httpx client, no socket).
* ``extism cold``: ``Plugin(wasm bytes)`` + call (compile + instantiate).
* ``extism warm (instance per call)``: ``Plugin(CompiledPlugin)`` + call.
* ``extism warm (reused instance)``: one ``Plugin``, ``call`` repeated (extism's usual
  use; its memory is reset between calls, the instance is not).

extism is installed with ``uv pip install --target`` into a temporary folder (the venv is
not touched); without network it is skipped and said so.

    .venv/bin/python benchmarks/wasm_calls.py [--calls 2000] [--cold-calls 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import msgspec
import wasmtime
from noa.builtin_plugins.wasm.cache import ModuleCache
from noa.builtin_plugins.wasm.config import WasmConfig
from noa.builtin_plugins.wasm.service import WasmHost
from noa.plugin_sdk.testing.harness import boot

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = {"x": 1}

EXTISM_ECHO = """
(module
  (import "extism:host/env" "input_offset" (func $input_offset (result i64)))
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (func (export "run") (result i32)
    (call $output_set (call $input_offset) (call $input_length))
    (i32.const 0)))
"""


def _wat_sources() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "noa_wasm_bench_wat", ROOT / "builtin_plugins/wasm/tests/wat.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(calls: int, op: Callable[[], object]) -> float:
    """Seconds per call of ``calls`` sequential calls of ``op``."""
    start = time.perf_counter()
    for _ in range(calls):
        op()
    return (time.perf_counter() - start) / calls


def install_extism(target: Path) -> ModuleType | None:
    uv = [shutil.which("uv")] if shutil.which("uv") else [sys.executable, "-m", "uv"]
    command = [*uv, "pip", "install", "--quiet", "--python", sys.executable]
    done = subprocess.run([*command, "--target", str(target), "extism"], check=False)
    if done.returncode != 0:
        print("extism: could not be installed (above); its rows are skipped", flush=True)
        return None
    sys.path.insert(0, str(target))
    import extism

    return extism


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="warm calls per run")
    parser.add_argument("--cold-calls", type=int, default=100, help="cold calls per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per scenario (median)")
    parser.add_argument("--no-extism", action="store_true", help="skip the extism rows")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="noa-bench-wasm-"))
    try:
        extism = None if args.no_extism else install_extism(work / "site")
        run(args, work, extism)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path, extism: ModuleType | None) -> None:
    wat = _wat_sources()
    echo_wasm = bytes(wasmtime.wat2wasm(wat.ECHO))
    plugins = work / "plugins" / "echo"
    plugins.mkdir(parents=True)
    (plugins / "plugin.wasm").write_bytes(echo_wasm)
    manifest = {"name": "echo", "version": "1.0.0", "entries": {"run": {}}}
    (plugins / "wasm.json").write_bytes(msgspec.json.encode(manifest))
    config = WasmConfig(plugin_dir=str(plugins.parent), cache_dir=str(work / "cache"))
    host = WasmHost(config, str(work / "data"))
    host.sandbox.start()
    host.reload_sync()
    loaded = host._catalog.plugins["echo"]  # the module and grants the service runs
    stdin = msgspec.json.encode(PAYLOAD)
    assert host.invoke_sync("echo", "run", PAYLOAD) == PAYLOAD

    cold_dir = work / "cold-cache"
    signed = ModuleCache(host.sandbox.engine, work / "signed-cache", b"k" * 32)
    signed.module(echo_wasm)  # fill the signed cache once

    def noa_cold() -> None:
        shutil.rmtree(cold_dir, ignore_errors=True)
        module = ModuleCache(host.sandbox.engine, cold_dir, b"k" * 32).module(echo_wasm)
        prepared = host.sandbox.prepare(module, loaded.grants)
        assert host.sandbox.run(prepared, "_start", loaded.grants, stdin).stdout == stdin

    def noa_cold_signed() -> None:
        prepared = host.sandbox.prepare(signed.module(echo_wasm), loaded.grants)
        assert host.sandbox.run(prepared, "_start", loaded.grants, stdin).stdout == stdin

    def noa_warm() -> None:
        host.invoke_sync("echo", "run", PAYLOAD)

    def noa_sandbox() -> None:
        host.sandbox.run(loaded.prepared, "_start", loaded.grants, stdin)

    scenarios: dict[str, tuple[int, Callable[[], float]]] = {
        "noa cold": (args.cold_calls, lambda: timed(args.cold_calls, noa_cold)),
        "noa cold (signed cache)": (
            args.cold_calls,
            lambda: timed(args.cold_calls, noa_cold_signed),
        ),
        "noa warm": (args.calls, lambda: timed(args.calls, noa_warm)),
        "noa warm (sandbox only)": (args.calls, lambda: timed(args.calls, noa_sandbox)),
    }
    if extism is not None:
        extism_wasm = bytes(wasmtime.wat2wasm(EXTISM_ECHO))
        compiled = extism.extism.CompiledPlugin(extism_wasm, wasi=False, functions=[])
        reused = extism.Plugin(compiled)
        assert reused.call("run", stdin) == stdin

        def extism_cold() -> None:
            extism.Plugin(extism_wasm, wasi=False, functions=[]).call("run", stdin)

        def extism_per_call() -> None:
            extism.Plugin(compiled).call("run", stdin)

        def extism_reused() -> None:
            reused.call("run", stdin)

        scenarios["extism cold"] = (args.cold_calls, lambda: timed(args.cold_calls, extism_cold))
        scenarios["extism warm (instance per call)"] = (
            args.calls,
            lambda: timed(args.calls, extism_per_call),
        )
        scenarios["extism warm (reused instance)"] = (
            args.calls,
            lambda: timed(args.calls, extism_reused),
        )

    results: dict[str, list[float]] = {}
    for name, (_calls, measure) in scenarios.items():
        measure()  # warm up
        results[name] = [measure() for _ in range(args.rounds)]
        print(f"{name:34s} {statistics.median(results[name]) * 1e6:9.1f} µs", flush=True)
    host.sandbox.close()
    results["noa warm http"] = http_rounds(args, work)
    print(f"{'noa warm http':34s} {statistics.median(results['noa warm http']) * 1e6:9.1f} µs")

    print()
    print(f"{'scenario':34s} {'µs/call':>9s} {'calls/s':>10s}")
    for name, runs in results.items():
        per_call = statistics.median(runs)
        print(f"{name:34s} {per_call * 1e6:9.1f} {1 / per_call:10,.0f}")
    if "extism warm (instance per call)" in results:
        ours = statistics.median(results["noa warm"])
        for peer in ("extism warm (instance per call)", "extism warm (reused instance)"):
            ratio = ours / statistics.median(results[peer])
            print(f"noa warm / {peer}: {ratio:.2f} (below 1: ours is faster)")


def http_rounds(args: argparse.Namespace, work: Path) -> list[float]:
    config = {
        "server": {"data_dir": str(work / "http-data")},
        "wasm": {"plugin_dir": str(work / "plugins")},
    }
    body = {"entry": "run", "input": PAYLOAD}

    async def measure() -> list[float]:
        async with boot(["http", "wasm"], config=config) as noa:

            async def call() -> None:
                answer = await noa.client.post("/v1/plugins/echo/invoke", json=body)
                assert answer.status_code == 200, answer.text

            async def rounds() -> float:
                start = time.perf_counter()
                for _ in range(args.calls):
                    await call()
                return (time.perf_counter() - start) / args.calls

            await rounds()  # warm up
            return [await rounds() for _ in range(args.rounds)]

    return asyncio.run(measure())


if __name__ == "__main__":
    main()
