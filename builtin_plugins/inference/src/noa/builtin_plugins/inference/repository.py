"""The model repository: a directory with one folder per model.

A model's name is its path under the repository root, so names may contain ``/``
(``sentence-transformers/all-MiniLM-L6-v2`` lives in
``<root>/sentence-transformers/all-MiniLM-L6-v2``). A folder is a model when it holds a
``config.json``; its family comes from that file's ``model_type``.

Adding a model copies (or fetches) it into a temporary folder next to its final place
and renames it in one step, so a crash never leaves half a model that looks whole.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
from noa.builtin_plugins.inference.errors import ModelLoadError

__all__ = ["ModelEntry", "ModelRepository", "validate_name"]

_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_NAME = re.compile(rf"^{_SEGMENT}(/{_SEGMENT})?$")
MARKER = "config.json"


def validate_name(name: str) -> str:
    """``name`` if it is a valid model name, else ValueError saying what is allowed."""
    if not _NAME.match(name) or ".." in name:
        raise ValueError(
            f"invalid model name {name!r}: use letters, digits, '.', '_', '-', and at most "
            "one '/' (as in 'org/model')"
        )
    return name


class ModelEntry(msgspec.Struct, frozen=True, kw_only=True):
    """What ``noa models info`` and the admin API say about a model on disk."""

    name: str
    path: str
    family: str
    size_bytes: int
    files: tuple[str, ...]


class ModelRepository:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        return self.root / validate_name(name)

    def _folders(self) -> Iterator[Path]:
        if not self.root.is_dir():
            return
        for first in sorted(self.root.iterdir()):
            if not first.is_dir() or first.name.startswith("."):
                continue
            if (first / MARKER).is_file():
                yield first
                continue
            for second in sorted(first.iterdir()):
                if (
                    second.is_dir()
                    and not second.name.startswith(".")
                    and (second / MARKER).is_file()
                ):
                    yield second

    def names(self) -> list[str]:
        return [folder.relative_to(self.root).as_posix() for folder in self._folders()]

    def __contains__(self, name: str) -> bool:
        try:
            return (self.path(name) / MARKER).is_file()
        except ValueError:
            return False

    def entry(self, name: str) -> ModelEntry:
        folder = self.path(name)
        if not (folder / MARKER).is_file():
            raise KeyError(name)
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        return ModelEntry(
            name=name,
            path=str(folder),
            family=family_of(folder, name),
            size_bytes=sum((folder / f).stat().st_size for f in files),
            files=tuple(files),
        )

    def add_folder(self, name: str, source: Path, *, replace: bool = False) -> ModelEntry:
        """Copy a model folder into the repository under ``name``."""
        if not (source / MARKER).is_file():
            raise ValueError(f"{source} is not a model folder: it has no {MARKER}")
        with self.staging(name, replace=replace) as staged:
            shutil.copytree(source, staged, dirs_exist_ok=True)
        return self.entry(name)

    def staging(self, name: str, *, replace: bool) -> _Staging:
        """A context manager giving an empty folder that becomes model ``name`` on exit."""
        target = self.path(name)
        if target.exists() and not replace:
            raise FileExistsError(f"model {name!r} already exists at {target}")
        return _Staging(target)

    def remove(self, name: str) -> None:
        folder = self.path(name)
        if not (folder / MARKER).is_file():
            raise KeyError(name)
        shutil.rmtree(folder)
        parent = folder.parent
        if parent != self.root and not any(parent.iterdir()):
            parent.rmdir()


class _Staging:
    def __init__(self, target: Path) -> None:
        self.target = target
        self._tmp: Path | None = None

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", dir=self.target.parent))
        return self._tmp

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        assert self._tmp is not None
        if kind is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            return
        if not (self._tmp / MARKER).is_file():
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise ValueError(f"nothing usable was written for {self.target.name}: no {MARKER}")
        old = None
        if self.target.exists():
            old = self.target.with_name(f".{self.target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            self.target.rename(old)
        self._tmp.rename(self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def family_of(folder: Path, name: str) -> str:
    """The model family named by ``config.json`` (``model_type``)."""
    try:
        config = json.loads((folder / MARKER).read_bytes())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(name, f"{folder / MARKER} cannot be read: {exc}") from None
    family = config.get("model_type") if isinstance(config, dict) else None
    if not isinstance(family, str) or not family:
        raise ModelLoadError(name, f"{folder / MARKER} names no model_type")
    return family
