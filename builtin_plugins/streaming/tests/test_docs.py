"""docs/streaming.md documents every config key with its default, and every close code."""

from __future__ import annotations

from pathlib import Path

import msgspec
from noa.builtin_plugins.streaming.config import StreamingConfig
from noa.builtin_plugins.streaming.frames import Close

DOC = (Path(__file__).resolve().parents[3] / "docs" / "streaming.md").read_text()


def test_every_config_key_is_documented_with_its_default() -> None:
    defaults = msgspec.to_builtins(StreamingConfig())
    for key, value in defaults.items():
        row = next((r for r in DOC.splitlines() if r.startswith(f"| `streaming.{key}` |")), "")
        assert f"`{msgspec.json.encode(value).decode()}`" in row, key


def test_every_close_code_is_documented() -> None:
    for code in Close:
        assert f"| {int(code)} |" in DOC, code
