"""WASM plugins in the kernel's plugin list: ``GET /v1/plugins`` on a serving server
(compiled: "started") and ``noa plugins list`` (booted, not started: manifests and
modules checked, nothing compiled: "loaded"), a plugin that fails to load with its
error."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


@pytest.fixture
def folders(make_plugin: Callable[..., Path], wat: ModuleType) -> None:
    make_plugin("echo", wat.ECHO, description="a JSON echo")
    make_plugin("typo", wat.ECHO, entrys={})
    make_plugin("garbage", b"\0asm\x01\0\0\0\xff\xff", module="plugin.wasm")


def wasm_rows(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in rows if r["kind"] == "wasm"}


async def test_plugins_endpoint_lists_wasm_plugins(
    serve: Any, folders: None, plugin_root: Path
) -> None:
    async with serve() as noa:
        body = (await noa.client.get("/v1/plugins")).json()
        python = [r["name"] for r in body["data"] if r["kind"] == "python" and r["enabled"]]
        assert python == ["http", "wasm"]
        rows = wasm_rows(body["data"])
        assert {n: (r["state"], r["hosted_by"]) for n, r in rows.items()} == {
            "echo": ("started", "wasm"),
            "garbage": ("failed", "wasm"),
            "typo": ("failed", "wasm"),
        }
        echo = rows["echo"]
        assert (echo["version"], echo["description"], echo["error"]) == (
            "1.0.0",
            "a JSON echo",
            None,
        )
        assert echo["entry_point"] == str(plugin_root / "echo")
        assert rows["garbage"]["error"].startswith("wasm_module_invalid: ")
        assert rows["typo"]["error"].startswith("wasm_manifest_invalid: ")
        assert "entrys" in rows["typo"]["error"]
        # The WASM API's own list keeps the detail (entries, schemas, error codes).
        detail = (await noa.client.get("/v1/wasm/plugins")).json()["data"]
        assert {r["name"] for r in detail} == set(rows)


def test_noa_plugins_list_shows_wasm_plugins(
    noa_cli: Any, folders: None, plugin_root: Path, tmp_path: Path
) -> None:
    env = {"NOA_WASM__PLUGIN_DIR": str(plugin_root), "NOA_SERVER__DATA_DIR": str(tmp_path / "d")}
    result = noa_cli("plugins", "list", "--json", env=env)
    assert result.returncode == 0, result.stderr
    rows = wasm_rows(json.loads(result.stdout))
    # Listing compiles nothing: a sound plugin is "loaded", not yet "started".
    assert {n: (r["state"], r["hosted_by"]) for n, r in rows.items()} == {
        "echo": ("loaded", "wasm"),
        "garbage": ("failed", "wasm"),
        "typo": ("failed", "wasm"),
    }
    assert rows["garbage"]["error"].startswith("wasm_module_invalid: ")
    assert not (tmp_path / "d" / "wasm-cache").exists() or not any(
        (tmp_path / "d" / "wasm-cache").iterdir()
    )

    table = noa_cli("plugins", "list", env=env).stdout.splitlines()
    echo = next(line for line in table if line.startswith("echo "))
    assert echo.split()[1:3] == ["wasm", "1.0.0"]
    assert any(line.startswith("  typo (wasm): wasm_manifest_invalid: ") for line in table)
