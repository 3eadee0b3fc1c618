"""The plugin written in AssemblyScript (examples/wasm-assemblyscript, built by
``scripts/setup``): loaded, listed and invoked over HTTP like any other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

TEXTS = [
    "",
    "one",
    "  the quick\tbrown fox\n\r\njumps \x0b\x0c ",
    'quotes " and \\\\ backslashes / too',
    "déjà vu — naïve café",
    "emoji 🦀 and 𝄞 outside the BMP",
    "ideographic\u3000space and\u00a0no-break\u2028line separator",
    "control \u0001 chars \u001f count",
]


def expected(text: str) -> dict[str, int]:
    return {"words": len(text.split()), "chars": len(text), "bytes": len(text.encode())}


async def test_listed_with_its_manifest(serve: Any, textstats: Path) -> None:
    async with serve() as noa:
        rows = (await noa.client.get("/v1/wasm/plugins")).json()["data"]
        assert [(r["name"], r["state"], r["version"]) for r in rows] == [
            ("textstats", "loaded", "1.0.0")
        ]
        assert rows[0]["entries"][0]["input_schema"]["required"] == ["text"]


@pytest.mark.parametrize("text", TEXTS)
async def test_invoked_over_http(serve: Any, textstats: Path, text: str) -> None:
    async with serve() as noa:
        answer = await noa.client.post(
            "/v1/plugins/textstats/invoke", json={"entry": "run", "input": {"text": text}}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"plugin": "textstats", "entry": "run", "output": expected(text)}


async def test_schema_and_python_api(serve: Any, textstats: Path) -> None:
    async with serve() as noa:
        refused = await noa.client.post(
            "/v1/plugins/textstats/invoke", json={"entry": "run", "input": {"txt": "x"}}
        )
        assert refused.status_code == 422
        assert refused.json()["error"]["code"] == "wasm_invalid_input"
        wasm = noa.kernel.state["noa.wasm"]
        long = "lorem ipsum dolor " * 5000  # more than one read of stdin
        assert await wasm.invoke("textstats", "run", {"text": long}) == expected(long)
