"""Plain-text tables for ``noa plugins list`` and ``noa config show``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from noa.plugin_sdk.types import PluginRecord


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _kind(row: PluginRecord) -> str:
    if row.hosted_by is None or row.hosted_by == row.kind:
        return row.kind
    return f"{row.kind} (via {row.hosted_by})"


def render_plugins(rows: Sequence[PluginRecord]) -> str:
    body = [
        [
            r.name,
            _kind(r),
            r.version or "-",
            r.distribution or "-",
            "yes" if r.enabled else "no",
            r.state + (" (optional)" if r.optional and r.hosted_by is None else ""),
            ", ".join(h.removeprefix("noa_") for h in r.hooks) or "-",
        ]
        for r in rows
    ]
    header = ["NAME", "KIND", "VERSION", "DISTRIBUTION", "ENABLED", "STATE", "HOOKS"]
    text = _table(header, body)
    errors = [
        f"  {r.name}{'' if r.hosted_by is None else f' ({r.kind})'}: {r.error}"
        for r in rows
        if r.error
    ]
    if errors:
        text += "\n\nerrors:\n" + "\n".join(errors)
    return text


def render_config(effective: dict[str, Any]) -> str:
    sources: dict[str, str] = effective["sources"]
    rows = []
    for key in sorted(sources):
        node: Any = effective["values"]
        for part in key.split("."):
            node = node[part]
        rows.append([key, json.dumps(node, default=str), sources[key]])
    head = f"profile: {effective['profile']}\nlayers: {' -> '.join(effective['layers'])}\n\n"
    return head + _table(["KEY", "VALUE", "FROM"], rows)
