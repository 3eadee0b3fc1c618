"""The WASM examples the documentation shows run as written."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]


def wat_block(page: str) -> str:
    text = (ROOT / "docs" / page).read_text()
    match = re.search(r"```wat\n(.*?)```", text, re.DOTALL)
    assert match, f"docs/{page} shows no WAT example"
    return match.group(1)


async def test_the_wat_echo_of_the_docs_echoes(
    serve: Any, make_plugin: Callable[..., Path]
) -> None:
    make_plugin("docs-echo", wat_block("wasm.md"))
    async with serve() as noa:
        answer = await noa.client.post(
            "/v1/plugins/docs-echo/invoke", json={"entry": "run", "input": {"a": [1, "é"]}}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["output"] == {"a": [1, "é"]}


def test_the_guide_points_at_both_examples() -> None:
    guide = (ROOT / "docs" / "writing-a-plugin.md").read_text()
    assert "(wasm.md)" in guide
    example = ROOT / "examples" / "wasm-assemblyscript"
    assert "examples/wasm-assemblyscript/" in guide
    for name in ("package.json", "package-lock.json", "asconfig.json", "wasm.toml", "build.sh"):
        assert (example / name).is_file(), name
    assert (example / "assembly" / "index.ts").is_file()
