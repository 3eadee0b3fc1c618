"""WASM plugins shipped by Python distributions (entry-point group ``noa.wasm_plugins``):
loaded beside ``plugin_dir``, a clash of names and a broken entry point reported as
load errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

GROUP = "noa.wasm_plugins"


def write_folder(folder: Path, name: str, source: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"name": name, "version": "2.0.0", "module": "plugin.wat", "entries": {"run": {}}}
    (folder / "wasm.json").write_text(json.dumps(manifest))
    (folder / "plugin.wat").write_text(source)


async def test_plugins_shipped_through_entry_points(
    serve: Any,
    installed: Any,
    make_plugin: Callable[..., Path],
    wat: ModuleType,
) -> None:
    make_plugin("echo", wat.ECHO)
    site = installed(
        "noa-wasm-fake",
        {
            GROUP: {
                # A package: its own folder holds the manifest and module.
                "shipped": "noa_wasm_fake.shipped",
                # An attribute holding a folder path.
                "counter": "noa_wasm_fake.paths:COUNTER",
                # Declares "echo", which plugin_dir already has.
                "clash": "noa_wasm_fake.clash",
                "missing": "noa_wasm_fake.nowhere",
                "notpath": "noa_wasm_fake.paths:NUMBER",
            }
        },
        {
            "noa_wasm_fake.__init__": "",
            "noa_wasm_fake.shipped.__init__": "",
            "noa_wasm_fake.clash.__init__": "",
            "noa_wasm_fake.paths": (
                "from pathlib import Path\n"
                "COUNTER = Path(__file__).parent / 'data' / 'counter'\n"
                "NUMBER = 3\n"
            ),
        },
    )
    write_folder(site / "noa_wasm_fake" / "shipped", "shipped", wat.ECHO)
    write_folder(site / "noa_wasm_fake" / "data" / "counter", "counter", wat.COUNTER)
    write_folder(site / "noa_wasm_fake" / "clash", "echo", wat.ECHO)
    async with serve() as noa:
        rows = (await noa.client.get("/v1/wasm/plugins")).json()["data"]
        table = [(r["name"], r["source"], r["state"], r["error_code"]) for r in rows]
        of = "of noa-wasm-fake"
        assert table == [
            ("echo", "plugin_dir", "loaded", None),
            ("echo", f"entry point clash {of}", "failed", "wasm_duplicate_name"),
            ("counter", f"entry point counter {of}", "loaded", None),
            ("missing", f"entry point missing {of}", "failed", "wasm_entry_point_invalid"),
            ("notpath", f"entry point notpath {of}", "failed", "wasm_entry_point_invalid"),
            ("shipped", f"entry point shipped {of}", "loaded", None),
        ]
        errors = {r["source"].split()[2]: r["error"] for r in rows if r["error"]}
        assert "(plugin_dir) already declares 'echo'" in errors["clash"]
        assert "no such module" in errors["missing"]
        assert "is a int, not a folder path" in errors["notpath"]
        wasm = noa.kernel.state["noa.wasm"]
        assert await wasm.invoke("shipped", "run", {"b": 2}) == {"b": 2}
        answer = await noa.client.post("/v1/plugins/counter/invoke", json={"entry": "run"})
        assert answer.json()["output"] == {"count": 1}, answer.text
