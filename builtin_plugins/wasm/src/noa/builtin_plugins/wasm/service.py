"""The WASM host: loads plugins (from ``plugin_dir`` and the ``noa.wasm_plugins`` entry
points), keeps them, and runs their calls.

Other plugins reach it as ``host.state["noa.wasm"]`` (:data:`WASM_STATE_KEY`) and call
``await wasm.invoke(name, entry, input)``; :meth:`WasmHost.invoke_sync` does the same
from a worker thread. A plugin that fails to load is listed with its error code and
cause; the others load and serve.

Two passes: :meth:`WasmHost.scan` (at configure time, also in ``noa plugins list``)
reads every manifest and validates every module without compiling, which is what the
kernel's plugin list and the task types need; :meth:`WasmHost.reload` (at startup and
on the admin call) compiles and links what the calls run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
import wasmtime
from noa.builtin_plugins.wasm.cache import ModuleCache
from noa.builtin_plugins.wasm.config import WasmConfig
from noa.builtin_plugins.wasm.discovery import plugin_folders
from noa.builtin_plugins.wasm.errors import WasmCallError, WasmLoadError, WasmTimeout
from noa.builtin_plugins.wasm.manifest import Manifest, load_manifest
from noa.builtin_plugins.wasm.sandbox import Grants, Outcome, Sandbox
from noa.builtin_plugins.wasm.schema import validate
from noa.plugin_sdk import NotFound, PluginRecord, Unprocessable

__all__ = ["WASM_STATE_KEY", "Declared", "LoadedPlugin", "PluginView", "WasmHost"]

WASM_STATE_KEY = "noa.wasm"
log = logging.getLogger(__name__)
_PRECOMPILED_MAGIC = b"\x7fELF"
_WASM_MAGIC = b"\0asm"


class EntryView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]


class PluginView(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``GET /v1/wasm/plugins`` and ``noa wasm list``."""

    name: str
    folder: str
    # "plugin_dir", or "entry point NAME of DIST" (group noa.wasm_plugins).
    source: str
    distribution: str = ""  # DIST of an entry point; "" for plugin_dir
    state: str  # "loaded" or "failed"
    version: str | None = None
    description: str | None = None
    entries: list[EntryView] = msgspec.field(default_factory=list)
    error_code: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Declared:
    """A plugin whose manifest reads and whose module validates (not compiled)."""

    manifest: Manifest
    folder: Path
    source: str
    distribution: str


@dataclass(frozen=True, slots=True)
class LoadedPlugin:
    manifest: Manifest
    module: wasmtime.Module
    grants: Grants
    folder: Path
    source: str
    # The module linked against its grants: what each call instantiates.
    prepared: wasmtime.InstancePre
    distribution: str = ""


@dataclass(slots=True)
class _Catalog:
    plugins: dict[str, LoadedPlugin] = field(default_factory=dict)
    rows: list[PluginView] = field(default_factory=list)


class WasmHost:
    """Loaded WASM plugins and the sandbox that runs them."""

    def __init__(self, config: WasmConfig, data_dir: str) -> None:
        from noa.builtin_plugins.wasm.cache import load_or_make_key

        self.config = config
        self.plugin_dir = Path(config.plugin_dir or os.path.join(data_dir, "wasm"))
        cache_dir = Path(config.cache_dir or os.path.join(data_dir, "wasm-cache"))
        key = (
            config.cache_key.reveal().encode()
            if config.cache_key
            else load_or_make_key(Path(data_dir) / "wasm-cache.key")
        )
        self.sandbox = Sandbox(config)
        self.cache = ModuleCache(self.sandbox.engine, cache_dir, key)
        self._catalog = _Catalog()
        self._loaded_once = False
        self._declared: dict[str, Declared] = {}
        self._declared_rows: list[PluginView] = []
        self._reload_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(config.max_concurrency, thread_name_prefix="noa-wasm")

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self.sandbox.start()
        await self.reload()

    async def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.sandbox.close()

    async def reload(self) -> list[PluginView]:
        """Load every plugin folder again (off the event loop); calls in flight finish on
        the modules they started with."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.reload_sync)

    def scan(self) -> list[PluginView]:
        """Read every manifest and validate every module, compiling nothing: the plugins
        :meth:`declared` (task types) and :meth:`records` (plugin list) answer from until
        the first :meth:`reload`. Cheap enough for every process that boots."""
        declared: dict[str, Declared] = {}
        rows: list[PluginView] = []
        for found in plugin_folders(self.plugin_dir):
            folder = found.folder
            try:
                if found.error is not None or folder is None:
                    raise found.error or WasmLoadError("wasm_entry_point_invalid", found.source)
                manifest, module_path = load_manifest(folder)
                manifest.resolved_limits(self.config)
                wasm = _module_bytes(module_path)
                try:
                    wasmtime.Module.validate(self.sandbox.engine, wasm)
                except wasmtime.WasmtimeError as exc:
                    raise WasmLoadError("wasm_module_invalid", f"{module_path}: {exc}") from exc
            except WasmLoadError as exc:
                rows.append(_failed(found.name, folder, found.source, found.distribution, exc))
                continue
            plugin = Declared(manifest, folder, found.source, found.distribution)
            first = declared.get(manifest.name)
            if first is not None:
                rows.append(_duplicate(manifest.name, folder, found.source, first))
                continue
            declared[manifest.name] = plugin
            rows.append(_view(plugin))
        self._declared, self._declared_rows = declared, rows
        return list(rows)

    def declared(self) -> list[Declared]:
        """The plugins :meth:`scan` found sound, in load order."""
        return list(self._declared.values())

    def reload_sync(self) -> list[PluginView]:
        with self._reload_lock:
            catalog = _Catalog()
            for found in plugin_folders(self.plugin_dir):
                try:
                    if found.error is not None:
                        raise found.error
                    assert found.folder is not None
                    plugin = self._load(found.folder, found.source, found.distribution)
                except WasmLoadError as exc:
                    log.warning("wasm plugin %s (%s) not loaded: %s", found.name, found.source, exc)
                    catalog.rows.append(
                        _failed(found.name, found.folder, found.source, found.distribution, exc)
                    )
                    continue
                name = plugin.manifest.name
                if name in catalog.plugins:
                    first = catalog.plugins[name]
                    catalog.rows.append(_duplicate(name, plugin.folder, plugin.source, first))
                    continue
                catalog.plugins[name] = plugin
                catalog.rows.append(_view(plugin))
            self._catalog = catalog
            self._loaded_once = True
            return list(catalog.rows)

    def _load(self, folder: Path, source: str, distribution: str = "") -> LoadedPlugin:
        manifest, module_path = load_manifest(folder)
        wasm = _module_bytes(module_path)
        try:
            module = self.cache.module(wasm)
        except wasmtime.WasmtimeError as exc:
            raise WasmLoadError("wasm_module_invalid", f"{module_path}: {exc}") from exc
        exports = {e.name: e.type for e in module.exports}
        for name, entry in manifest.entries.items():
            kind = exports.get(entry.export)
            if not isinstance(kind, wasmtime.FuncType) or kind.params or kind.results:
                raise WasmLoadError(
                    "wasm_entry_missing",
                    f"entry {name!r}: the module exports no function {entry.export!r} "
                    "taking and returning nothing",
                )
        for imported in module.imports:
            if imported.module != "wasi_snapshot_preview1":
                raise WasmLoadError(
                    "wasm_import_denied",
                    f"{module_path}: imports {imported.module}.{imported.name}; only "
                    "wasi_snapshot_preview1 is provided",
                )
        limits = manifest.resolved_limits(self.config)
        caps = manifest.capabilities
        grants = Grants(
            argv0=manifest.name,
            dirs=tuple((str((folder / d.host).resolve()), d.guest, d.read_only) for d in caps.dirs),
            env=tuple((name, os.environ[name]) for name in caps.env if name in os.environ),
            clock=caps.clock,
            random=caps.random,
            memory_bytes=limits.memory_mib << 20,
            fuel=limits.fuel,
            timeout_ms=limits.timeout_ms,
            max_output_bytes=limits.max_output_bytes,
        )
        try:
            prepared = self.sandbox.prepare(module, grants)
        except wasmtime.WasmtimeError as exc:  # e.g. a WASI function with the wrong type
            raise WasmLoadError("wasm_import_denied", f"{module_path}: {exc}") from exc
        return LoadedPlugin(
            manifest=manifest,
            module=module,
            grants=grants,
            folder=folder,
            source=source,
            prepared=prepared,
            distribution=distribution,
        )

    # -- listing and calls -----------------------------------------------------------

    def plugins(self) -> list[PluginView]:
        return list(self._catalog.rows)

    def records(self) -> list[PluginRecord]:
        """The rows of the kernel's plugin list (``GET /v1/plugins``, ``noa plugins
        list``): once loaded, each plugin "started" (compiled, callable) or "failed";
        before (``noa plugins list``), as :meth:`scan` found it, "loaded" or "failed"."""
        if self._loaded_once:
            return [_record(row, "started") for row in self._catalog.rows]
        return [_record(row, "loaded") for row in self._declared_rows]

    async def invoke(self, name: str, entry: str, payload: Any) -> Any:
        """Call ``entry`` of plugin ``name`` with ``payload`` (JSON-able); its output."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.invoke_sync, name, entry, payload)

    def invoke_sync(self, name: str, entry: str, payload: Any) -> Any:
        plugin = self._catalog.plugins.get(name)
        if plugin is None:
            raise NotFound(f"no WASM plugin {name!r} is loaded", code="wasm_plugin_not_found")
        spec = plugin.manifest.entries.get(entry)
        if spec is None:
            raise NotFound(
                f"WASM plugin {name!r} has no entry {entry!r} "
                f"(it has: {', '.join(plugin.manifest.entries)})",
                code="wasm_entry_not_found",
                param="entry",
            )
        problem = validate(payload, spec.input_schema)
        if problem:
            raise Unprocessable(
                f"input fails the schema of {name}.{entry}: {problem}",
                code="wasm_invalid_input",
                param="input",
            )
        stdin = msgspec.json.encode(payload)
        if len(stdin) > self.config.max_input_bytes:
            raise Unprocessable(
                f"input is {len(stdin)} bytes; wasm.max_input_bytes is "
                f"{self.config.max_input_bytes}",
                code="wasm_input_too_large",
                param="input",
            )
        outcome = self.sandbox.run(plugin.prepared, spec.export, plugin.grants, stdin)
        output = _result(f"{name}.{entry}", plugin.grants, outcome)
        problem = validate(output, spec.output_schema)
        if problem:
            raise WasmCallError(
                f"{name}.{entry} wrote output failing its schema: {problem}",
                code="wasm_bad_output",
            )
        return output


def _module_bytes(module_path: Path) -> bytes:
    """The WASM binary of a plugin's module file (a .wat text is converted)."""
    try:
        raw = module_path.read_bytes()
    except OSError as exc:
        raise WasmLoadError("wasm_module_missing", f"{module_path}: {exc.strerror}") from exc
    if raw.startswith(_PRECOMPILED_MAGIC) or module_path.suffix == ".cwasm":
        raise WasmLoadError(
            "wasm_precompiled_refused",
            f"{module_path}: precompiled artifacts are never loaded; ship the .wasm",
        )
    if raw.startswith(_WASM_MAGIC):
        return raw
    try:
        return bytes(wasmtime.wat2wasm(raw.decode()))
    except (wasmtime.WasmtimeError, UnicodeDecodeError) as exc:
        raise WasmLoadError("wasm_module_invalid", f"{module_path}: {exc}") from exc


def _failed(
    name: str, folder: Path | None, source: str, distribution: str, exc: WasmLoadError
) -> PluginView:
    return PluginView(
        name=name,
        folder=str(folder or ""),
        source=source,
        distribution=distribution,
        state="failed",
        error_code=exc.code,
        error=exc.message,
    )


def _duplicate(name: str, folder: Path, source: str, first: Declared | LoadedPlugin) -> PluginView:
    return PluginView(
        name=name,
        folder=str(folder),
        source=source,
        state="failed",
        error_code="wasm_duplicate_name",
        error=f"{first.folder} ({first.source}) already declares {name!r}",
    )


def _record(row: PluginView, ready: Literal["loaded", "started"]) -> PluginRecord:
    """A row of the kernel's plugin list; ``ready``: the state of a sound plugin."""
    return PluginRecord(
        name=row.name,
        version=row.version or "",
        distribution=row.distribution,
        entry_point=row.folder or row.source,
        enabled=True,
        # A WASM plugin that fails to load never stops the server: optional by nature.
        optional=True,
        state=ready if row.state == "loaded" else "failed",
        description=row.description or "",
        error=f"{row.error_code}: {row.error}" if row.state == "failed" else None,
    )


def _view(plugin: Declared | LoadedPlugin) -> PluginView:
    manifest = plugin.manifest
    return PluginView(
        name=manifest.name,
        folder=str(plugin.folder),
        source=plugin.source,
        distribution=plugin.distribution,
        state="loaded",
        version=manifest.version,
        description=manifest.description,
        entries=[
            EntryView(
                name=name,
                description=e.description,
                input_schema=e.input_schema,
                output_schema=e.output_schema,
            )
            for name, e in manifest.entries.items()
        ],
    )


def _tail(stderr: bytes) -> str:
    text = stderr.decode(errors="replace").strip()
    return f"; stderr: {text}" if text else ""


def _result(call: str, grants: Grants, outcome: Outcome) -> Any:
    """The call's output, or the error that says how it failed."""
    # Order matters: a limit that was hit explains the trap or exit that followed it.
    if outcome.output_overflow:
        raise WasmCallError(
            f"{call} wrote more than {grants.max_output_bytes} bytes to stdout",
            code="wasm_output_too_large",
        )
    trap = outcome.trap
    code = getattr(trap, "trap_code", None)
    if code in (wasmtime.TrapCode.OUT_OF_FUEL, wasmtime.TrapCode.INTERRUPT):
        what = "fuel" if code == wasmtime.TrapCode.OUT_OF_FUEL else "time"
        raise WasmTimeout(
            f"{call} ran out of {what} (fuel {grants.fuel}, {grants.timeout_ms} ms)",
            code="wasm_timeout",
            details={"limit": what},
        )
    failed = trap is not None or outcome.exit_code != 0
    at_cap = (
        outcome.memory_bytes is not None and outcome.memory_bytes + (64 << 10) > grants.memory_bytes
    )
    # A refused memory.grow returns -1 rather than trapping: a call that fails while its
    # memory stands at the cap, or can't even be instantiated under it, hit the cap.
    if failed and (at_cap or (trap is not None and "memory" in str(trap) and "limit" in str(trap))):
        raise WasmCallError(
            f"{call} failed at its memory cap of {grants.memory_bytes >> 20} MiB"
            + _tail(outcome.stderr),
            code="wasm_memory_limit",
        )
    if trap is not None:
        message = str(trap).strip().splitlines()[0] if str(trap).strip() else "trap"
        raise WasmCallError(f"{call} trapped: {message}", code="wasm_trap")
    if outcome.exit_code != 0:
        raise WasmCallError(
            f"{call} exited with code {outcome.exit_code}" + _tail(outcome.stderr),
            code="wasm_failed",
        )
    try:
        return msgspec.json.decode(outcome.stdout)
    except msgspec.DecodeError as exc:
        raise WasmCallError(
            f"{call} wrote output that is not JSON ({exc})", code="wasm_bad_output"
        ) from exc
