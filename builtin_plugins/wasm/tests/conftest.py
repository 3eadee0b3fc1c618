"""Fixtures of the wasm tests: plugin folders written from WAT, and a server on them."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from noa.plugin_sdk.testing.harness import KernelUnderTest, boot
from noa.plugin_sdk.testing.requirements import missing

OBJECT = {"type": "object"}
ROOT = Path(__file__).resolve().parents[3]


def _load_wat() -> ModuleType:
    # Tests import with --import-mode=importlib (no sys.path entry): load it by path.
    spec = importlib.util.spec_from_file_location(
        "noa_wasm_test_wat", Path(__file__).with_name("wat.py")
    )
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


wat = _load_wat()


@pytest.fixture(name="wat")
def wat_sources() -> ModuleType:
    """The WAT sources of tests/wat.py."""
    return wat


@pytest.fixture
def make_plugin(plugin_root: Path) -> Callable[..., Path]:
    """``make_plugin(name, source, **manifest)``: a plugin folder under plugin_root."""

    def make(name: str, source: str | bytes, **manifest: Any) -> Path:
        return write_plugin(plugin_root, name, source, **manifest)

    return make


def write_plugin(
    root: Path,
    name: str,
    source: str | bytes,
    *,
    entries: dict[str, Any] | None = None,
    module: str = "plugin.wat",
    **manifest: Any,
) -> Path:
    """A plugin folder ``root/name`` with a wasm.json manifest and its module."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    body = {
        "name": name,
        "version": "1.0.0",
        "module": module,
        "entries": entries or {"run": {}},
        **manifest,
    }
    (folder / "wasm.json").write_text(json.dumps(body))
    data = source.encode() if isinstance(source, str) else source
    (folder / module).write_bytes(data)
    return folder


@pytest.fixture
def plugin_root(tmp_path: Path) -> Path:
    root = tmp_path / "wasm"
    root.mkdir()
    return root


@pytest.fixture
def serve(tmp_path: Path, plugin_root: Path) -> Callable[..., Any]:
    """``async with serve() as noa``: a server with the http and wasm plugins."""

    def start(**wasm: Any) -> Any:
        config = {
            "server": {"data_dir": str(tmp_path / "data")},
            "wasm": {"plugin_dir": str(plugin_root), **wasm},
        }
        return boot(["http", "wasm"], config=config)

    return start


@pytest.fixture
async def echo_server(
    serve: Callable[..., Any], plugin_root: Path
) -> AsyncIterator[KernelUnderTest]:
    write_plugin(plugin_root, "echo", wat.ECHO, entries={"run": {"input_schema": OBJECT}})
    async with serve() as noa:
        yield noa


@pytest.fixture(scope="session")
def textstats_dir() -> Path:
    """The AssemblyScript example (examples/wasm-assemblyscript) as ``scripts/setup``
    builds it: a plugin folder. Missing: skipped, or failed under ``CI=true``."""
    configured = os.environ.get("NOA_TEST_WASM_EXAMPLES")
    root = Path(configured) if configured else ROOT / ".noa" / "wasm-examples"
    folder = root / "textstats"
    if not (folder / "plugin.wasm").is_file():
        message = (
            f"the AssemblyScript example is not built at {folder}; run ./scripts/setup "
            "(or examples/wasm-assemblyscript/build.sh; needs npm)"
        )
        missing(message, what="build")
    return folder


@pytest.fixture
def textstats(textstats_dir: Path, plugin_root: Path) -> Path:
    """The built AssemblyScript plugin, copied into the test's plugin folder."""
    return Path(shutil.copytree(textstats_dir, plugin_root / "textstats"))
