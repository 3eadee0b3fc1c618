"""Examples in docs/ run: the plugin in the "Writing a plugin" guide works as written."""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1] / "docs"


def example(page: str, name: str) -> str:
    text = (DOCS / page).read_text()
    match = re.search(rf"<!-- example: {name} -->\s*```python\n(.*?)```", text, re.DOTALL)
    assert match, f"{page} has no example {name!r}"
    return match.group(1)


async def test_guide_plugin_works_as_written(noa_boot: Any) -> None:
    module = types.ModuleType("inventory_guide")
    exec(
        compile(example("writing-a-plugin.md", "plugin"), "writing-a-plugin.md", "exec"),
        module.__dict__,
    )
    import sys

    sys.modules[module.__name__] = module  # Litestar resolves handler annotations by module
    try:
        config = {"inventory": {"warehouse": "north"}}
        async with noa_boot(["http"], config=config, extra_plugins={"inventory": module}) as noa:
            ok = await noa.client.get("/v1/inventory/pen")
            assert ok.json() == {"item": "pen", "count": 12, "warehouse": "north"}
            missing = (await noa.client.get("/v1/inventory/glue")).json()["error"]
            assert (missing["code"], missing["param"]) == ("unknown_item", "item")
            ready = (await noa.client.get("/ready")).json()
            assert [c["name"] for c in ready["components"]] == ["warehouse"]
    finally:
        del sys.modules[module.__name__]
