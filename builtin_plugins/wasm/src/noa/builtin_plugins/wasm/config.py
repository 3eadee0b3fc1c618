"""The ``[wasm]`` config section: where WASM plugins live and the server's ceilings."""

from __future__ import annotations

from typing import Annotated

import msgspec
from noa.plugin_sdk import PluginConfig, Secret

__all__ = ["WasmConfig"]


class WasmConfig(PluginConfig, frozen=True):
    # The folder of WASM plugins: one sub-folder per plugin, holding its manifest
    # (wasm.toml or wasm.json) and its module. Empty: "<server.data_dir>/wasm".
    plugin_dir: str = ""
    # The folder of compiled modules (wasmtime serialization, HMAC-signed). Empty:
    # "<server.data_dir>/wasm-cache".
    cache_dir: str = ""
    # The HMAC-SHA256 key that signs the compiled-module cache. Empty: a random key made
    # once and kept (mode 0600) in "<server.data_dir>/wasm-cache.key".
    cache_key: Secret | None = None
    # Ceilings and defaults of every plugin's limits: a manifest may lower them, never
    # raise them (a higher value is a load error).
    # Linear memory of one call, in MiB.
    memory_mib: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 64
    # Fuel of one call (about one unit per WASM instruction).
    fuel: Annotated[int, msgspec.Meta(ge=1)] = 10_000_000_000
    # Wall-clock time of one call, in milliseconds (an epoch deadline).
    timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=600_000)] = 10_000
    # Bytes one call may write to stdout.
    max_output_bytes: Annotated[int, msgspec.Meta(ge=1)] = 1 << 20
    # Bytes of a call's stderr kept for its error message (the last ones).
    max_stderr_bytes: Annotated[int, msgspec.Meta(ge=0)] = 4096
    # Largest JSON input one call accepts, in bytes.
    max_input_bytes: Annotated[int, msgspec.Meta(ge=1)] = 1 << 20
    # Virtual address space reserved for one linear memory, in MiB. Small, so hundreds
    # of concurrent instances don't exhaust the address space (wasmtime's default is
    # 4 GiB plus a 2 GiB guard); memory growing past it is moved.
    memory_reservation_mib: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 8
    # Calls running at once (worker threads); more wait for a free thread.
    max_concurrency: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 16
    # The epoch tick (granularity of timeout_ms), in milliseconds.
    epoch_tick_ms: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
