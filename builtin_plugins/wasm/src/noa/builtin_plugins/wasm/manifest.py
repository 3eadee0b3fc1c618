"""The manifest of a WASM plugin (``wasm.toml`` or ``wasm.json`` beside its module).

A manifest names the plugin, its entry points with their input and output schemas,
the capabilities it is granted and its limits. Anything it does not grant, the module
does not get: no files, no environment, no clock, no randomness.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

import msgspec
from noa.builtin_plugins.wasm.config import WasmConfig
from noa.builtin_plugins.wasm.errors import WasmLoadError
from noa.builtin_plugins.wasm.schema import check_schema

__all__ = ["MANIFEST_NAMES", "Dir", "Entry", "Limits", "Manifest", "load_manifest"]

MANIFEST_NAMES = ("wasm.toml", "wasm.json")
_NAME = r"^[a-z][a-z0-9_-]{0,62}$"
Name = Annotated[str, msgspec.Meta(pattern=_NAME)]


class _Strict(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class Entry(_Strict, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[entries.NAME]``: one way to call the plugin."""

    # The exported function run as a WASI command (no parameters, no results).
    export: str = "_start"
    description: str = ""
    # JSON schemas (a subset: see schema.py) the input and the output must pass.
    input_schema: dict[str, Any] = msgspec.field(default_factory=dict)
    output_schema: dict[str, Any] = msgspec.field(default_factory=dict)


class Dir(_Strict, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[[capabilities.dirs]]``: a host folder the module sees at ``guest``."""

    # The host folder; relative to the plugin's folder. It must exist.
    host: str
    # Where the module sees it ("/data").
    guest: str
    # Read-only unless the manifest says otherwise.
    read_only: bool = True


class Capabilities(_Strict, frozen=True, forbid_unknown_fields=True, kw_only=True):
    dirs: tuple[Dir, ...] = ()
    # Names of environment variables passed through with the server's values (a name
    # the server's environment lacks is left out).
    env: tuple[str, ...] = ()
    # The WASI clocks (clock_time_get, clock_res_get, poll_oneoff); denied: ENOSYS.
    clock: bool = False
    # WASI random_get; denied: ENOSYS.
    random: bool = False


class Limits(_Strict, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Per-call limits; 0: the server's ceiling (``[wasm]``). Higher than it: load error."""

    memory_mib: Annotated[int, msgspec.Meta(ge=0)] = 0
    fuel: Annotated[int, msgspec.Meta(ge=0)] = 0
    timeout_ms: Annotated[int, msgspec.Meta(ge=0)] = 0
    max_output_bytes: Annotated[int, msgspec.Meta(ge=0)] = 0


class Manifest(_Strict, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: Name
    version: str
    description: str = ""
    # The module file beside the manifest: a .wasm binary (or .wat text).
    module: str = "plugin.wasm"
    entries: dict[Name, Entry]
    capabilities: Capabilities = Capabilities()
    limits: Limits = Limits()

    def resolved_limits(self, config: WasmConfig) -> Limits:
        """Every limit as a number, checked against the server's ceilings."""
        ceilings = {
            "memory_mib": config.memory_mib,
            "fuel": config.fuel,
            "timeout_ms": config.timeout_ms,
            "max_output_bytes": config.max_output_bytes,
        }
        values: dict[str, int] = {}
        for key, ceiling in ceilings.items():
            asked = getattr(self.limits, key)
            if asked > ceiling:
                raise WasmLoadError(
                    "wasm_limit_too_high",
                    f"limits.{key} = {asked} is above the server's wasm.{key} = {ceiling}",
                )
            values[key] = asked or ceiling
        return Limits(**values)


def load_manifest(folder: Path) -> tuple[Manifest, Path]:
    """The manifest in ``folder`` and the path of its module; WasmLoadError if either
    is missing or malformed."""
    found = [folder / name for name in MANIFEST_NAMES if (folder / name).is_file()]
    if not found:
        raise WasmLoadError(
            "wasm_manifest_missing", f"no {' or '.join(MANIFEST_NAMES)} in {folder}"
        )
    if len(found) > 1:
        raise WasmLoadError("wasm_manifest_invalid", f"both {MANIFEST_NAMES} in {folder}")
    path = found[0]
    try:
        raw = path.read_bytes()
        data = tomllib.loads(raw.decode()) if path.suffix == ".toml" else msgspec.json.decode(raw)
        manifest = msgspec.convert(data, Manifest)
    except (ValueError, UnicodeDecodeError, msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise WasmLoadError("wasm_manifest_invalid", f"{path}: {exc}") from exc
    if not manifest.entries:
        raise WasmLoadError("wasm_manifest_invalid", f"{path}: declares no entries")
    for name, entry in manifest.entries.items():
        for which in ("input_schema", "output_schema"):
            try:
                check_schema(getattr(entry, which), f"entries.{name}.{which}")
            except ValueError as exc:
                raise WasmLoadError("wasm_manifest_invalid", f"{path}: {exc}") from exc
    for index, grant in enumerate(manifest.capabilities.dirs):
        host = (folder / grant.host).resolve()
        if not host.is_dir():
            raise WasmLoadError(
                "wasm_manifest_invalid",
                f"{path}: capabilities.dirs[{index}].host {grant.host!r} is not a folder",
            )
        if not grant.guest.startswith("/"):
            raise WasmLoadError(
                "wasm_manifest_invalid",
                f"{path}: capabilities.dirs[{index}].guest must be absolute",
            )
    for var in manifest.capabilities.env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
            raise WasmLoadError("wasm_manifest_invalid", f"{path}: bad env name {var!r}")
    module = folder / manifest.module
    if Path(manifest.module).name != manifest.module:
        raise WasmLoadError("wasm_manifest_invalid", f"{path}: module must be a file name")
    return manifest, module
