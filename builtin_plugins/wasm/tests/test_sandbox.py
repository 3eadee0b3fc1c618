"""The engine and the compiled-module cache, below the HTTP layer."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
import wasmtime
from noa.builtin_plugins.wasm.cache import ModuleCache, load_or_make_key
from noa.builtin_plugins.wasm.config import WasmConfig
from noa.builtin_plugins.wasm.sandbox import Grants, Sandbox


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


def _write_then_exit(fd: int, iovs: int, count: int, written: int, vec: str) -> str:
    """Stores the iovecs ``vec`` (WAT instructions) then exits with fd_write's errno."""
    body = f"""
 (func (export "_start")
   {vec}
   (call $proc_exit (call $fd_write (i32.const {fd}) (i32.const {iovs}) (i32.const {count})
     (i32.const {written}))))"""
    return body


HELLO = "(i32.store (i32.const 0) (i32.const 100)) (i32.store (i32.const 4) (i32.const 5))"
TWICE = (
    HELLO + " (i32.store (i32.const 8) (i32.const 100)) (i32.store (i32.const 12) (i32.const 5))"
)
PAST_END = "(i32.store (i32.const 0) (i32.const 65530)) (i32.store (i32.const 4) (i32.const 100))"


@pytest.mark.parametrize(
    ("fd", "iovs", "count", "written", "vec", "errno", "stdout", "stderr"),
    [
        (1, 0, 1, 64, HELLO, 0, b"hello", b""),
        (1, 0, 2, 64, TWICE, 0, b"hellohello", b""),
        (2, 0, 2, 64, TWICE, 0, b"", b"llo"),  # only max_stderr_bytes of the tail
        (0, 0, 1, 64, HELLO, 8, b"", b""),  # EBADF: stdin, and any fd but 1 and 2
        (7, 0, 1, 64, HELLO, 8, b"", b""),
        (1, 65535, 1, 64, HELLO, 21, b"", b""),  # EFAULT: the iovec array past the end
        (1, -8, 1, 64, HELLO, 21, b"", b""),
        (1, 0, 1, 65534, HELLO, 21, b"", b""),  # EFAULT: nwritten past the end
        (1, 0, 1, 64, PAST_END, 21, b"", b""),  # EFAULT: a buffer past the end
        (1, 0, 5000, 64, HELLO, 28, b"", b""),  # EINVAL: more than IOV_MAX iovecs
    ],
)
def test_stdout_and_stderr_writes_are_bounds_checked(
    wat: ModuleType,
    fd: int,
    iovs: int,
    count: int,
    written: int,
    vec: str,
    errno: int,
    stdout: bytes,
    stderr: bytes,
) -> None:
    sandbox = Sandbox(WasmConfig(max_stderr_bytes=3))
    source = wat.module(
        _write_then_exit(fd, iovs, count, written, vec), '(data (i32.const 100) "hello")'
    )
    grants = Grants(
        argv0="t",
        dirs=(),
        env=(),
        clock=False,
        random=False,
        memory_bytes=1 << 20,
        fuel=1_000_000,
        timeout_ms=1000,
        max_output_bytes=100,
    )
    prepared = sandbox.prepare(wasmtime.Module(sandbox.engine, source), grants)
    sandbox.start()
    try:
        outcome = sandbox.run(prepared, "_start", grants, b"{}")
    finally:
        sandbox.close()
    assert (outcome.exit_code, outcome.stdout, outcome.stderr) == (errno, stdout, stderr)
