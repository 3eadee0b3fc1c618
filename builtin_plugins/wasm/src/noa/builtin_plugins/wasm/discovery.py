"""Where WASM plugin folders come from: ``[wasm] plugin_dir`` and Python distributions.

A distribution ships WASM plugins through the entry-point group ``noa.wasm_plugins``.
Each entry point names a folder holding a manifest and its module, either as a module
(``echo = "my_dist.wasm.echo"``: the package's own folder, found without importing
it) or as an attribute holding a path (``echo = "my_dist.plugins:ECHO_DIR"``).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from noa.builtin_plugins.wasm.errors import WasmLoadError

__all__ = ["ENTRY_POINT_GROUP", "Found", "plugin_folders"]

ENTRY_POINT_GROUP = "noa.wasm_plugins"


@dataclass(frozen=True, slots=True)
class Found:
    """A plugin folder, or why an entry point names none (``error``)."""

    name: str  # the folder's name, or the entry point's
    source: str  # "plugin_dir", or "entry point NAME of DIST"
    folder: Path | None
    error: WasmLoadError | None = None
    distribution: str = ""  # of the entry point; "" for plugin_dir


def plugin_folders(plugin_dir: Path) -> list[Found]:
    """The folders of ``plugin_dir`` (sorted), then those of the entry points (sorted by
    entry-point name, then distribution): a deterministic order, whatever the
    environment's."""
    found = [
        Found(name=p.name, source="plugin_dir", folder=p)
        for p in (sorted(plugin_dir.iterdir()) if plugin_dir.is_dir() else [])
        if p.is_dir()
    ]
    points = sorted(entry_points(group=ENTRY_POINT_GROUP), key=_order)
    found.extend(_from_entry_point(point) for point in points)
    return found


def _order(point: EntryPoint) -> tuple[str, str]:
    return point.name, point.dist.name if point.dist else ""


def _from_entry_point(point: EntryPoint) -> Found:
    dist = point.dist.name if point.dist else "?"
    source = f"entry point {point.name} of {dist}"
    try:
        folder = _folder_of(point)
    except WasmLoadError as exc:
        return Found(name=point.name, source=source, folder=None, error=exc, distribution=dist)
    return Found(name=point.name, source=source, folder=folder, distribution=dist)


def _folder_of(point: EntryPoint) -> Path:
    where = f"{ENTRY_POINT_GROUP} entry point {point.name!r} ({point.value})"
    try:
        target = _target(point)
    except Exception as exc:  # whatever the distribution's code raises ends this one only
        raise WasmLoadError("wasm_entry_point_invalid", f"{where}: {exc!r}") from exc
    if isinstance(target, str):
        raise WasmLoadError("wasm_entry_point_invalid", f"{where}: {target}")
    if not target.is_dir():
        raise WasmLoadError("wasm_entry_point_invalid", f"{where}: {target} is not a folder")
    return target


def _target(point: EntryPoint) -> Path | str:
    """The folder an entry point names, or what is wrong with it."""
    if point.attr is None:
        # The module's folder, found without running its code.
        spec = importlib.util.find_spec(point.module)
        if spec is None:
            return "no such module"
        if spec.submodule_search_locations:
            return Path(next(iter(spec.submodule_search_locations)))
        return Path(spec.origin).parent if spec.origin else "the module has no folder"
    value = point.load()
    if isinstance(value, str | os.PathLike):
        return Path(value)
    return f"is a {type(value).__name__}, not a folder path"
