"""The engine and the compiled-module cache, below the HTTP layer."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import wasmtime
from noa.builtin_plugins.wasm.cache import ModuleCache, load_or_make_key
from noa.builtin_plugins.wasm.config import WasmConfig
from noa.builtin_plugins.wasm.sandbox import Sandbox


def _vm_size_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1])
    raise AssertionError("no VmSize")


def test_hundreds_of_live_instances_fit_in_a_small_address_space(wat: ModuleType) -> None:
    sandbox = Sandbox(WasmConfig())
    module = wasmtime.Module(sandbox.engine, wat.COUNTER)
    before = _vm_size_kib()
    stores = []
    for _ in range(300):
        store = wasmtime.Store(sandbox.engine)
        store.set_limits(memory_size=64 << 20)
        linker = wasmtime.Linker(sandbox.engine)
        linker.define_wasi()
        store.set_wasi(wasmtime.WasiConfig())
        stores.append((store, linker.instantiate(store, module)))
    grown_mib = (_vm_size_kib() - before) / 1024
    # 8 MiB reservation + 1 MiB for growth + 64 KiB guard each: ~2.7 GiB at most for
    # 300, against ~1.8 TiB with wasmtime's defaults (4 GiB + 2 GiB guard each).
    assert grown_mib < 300 * 10, grown_mib
    print(f"300 live instances: +{grown_mib:.0f} MiB of address space")
    sandbox.close()


def test_cache_is_used_verified_and_rebuilt_when_tampered(wat: ModuleType, tmp_path: Path) -> None:
    engine = Sandbox(WasmConfig()).engine
    key = load_or_make_key(tmp_path / "key")
    assert (tmp_path / "key").stat().st_mode & 0o777 == 0o600
    assert load_or_make_key(tmp_path / "key") == key
    wasm = wasmtime.wat2wasm(wat.ECHO)
    cache = ModuleCache(engine, tmp_path / "cache", key)
    cache.module(wasm)
    assert (cache.hits, cache.misses) == (0, 1)
    path = cache.path_for(wasm)
    assert path.name.endswith(".cwasm") and path.is_file()
    ModuleCache(engine, tmp_path / "cache", key).module(wasm)  # a restart reuses it
    again = ModuleCache(engine, tmp_path / "cache", key)
    again.module(wasm)
    assert (again.hits, again.misses) == (1, 0)
    # A flipped byte, or another key: deleted and compiled again, never deserialized.
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    tampered = ModuleCache(engine, tmp_path / "cache", key)
    tampered.module(wasm)
    assert (tampered.hits, tampered.misses) == (0, 1)
    stranger = ModuleCache(engine, tmp_path / "cache", b"another key")
    stranger.module(wasm)
    assert (stranger.hits, stranger.misses) == (0, 1)
    assert ModuleCache(engine, tmp_path / "cache", key).module(wasm) is not None
