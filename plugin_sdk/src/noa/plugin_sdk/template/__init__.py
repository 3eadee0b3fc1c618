"""The template of a new ``noa-plugin-<name>`` package (``noa plugins new NAME``).

Files under ``files/`` are :class:`string.Template` texts: ``$name`` is the plugin name
(``my_feature``), ``$dist`` the distribution (``noa-plugin-my-feature``), ``$module``
the import package (``noa_plugin_my_feature``) and ``$title`` a readable title. Paths
containing ``__module__`` are renamed to ``$module``.
"""

from __future__ import annotations

import re
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from string import Template

__all__ = ["NAME_PATTERN", "render"]

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{1,40}$")


def _walk(node: Traversable, prefix: str = "") -> list[tuple[str, Traversable]]:
    found: list[tuple[str, Traversable]] = []
    for child in node.iterdir():
        path = f"{prefix}{child.name}"
        if child.is_dir():
            found += _walk(child, path + "/")
        elif child.name.endswith(".tmpl"):
            found.append((path[: -len(".tmpl")], child))
    return found


def render(name: str, destination: Path) -> list[Path]:
    """Write a new plugin package named ``name`` into ``destination`` (which must not
    exist yet); returns the files written."""
    if not NAME_PATTERN.match(name):
        raise ValueError(
            f"plugin name {name!r} must be lower-case letters, digits and _ (2-41 characters, "
            "starting with a letter)"
        )
    if destination.exists():
        raise FileExistsError(f"{destination} already exists: choose another folder")
    values = {
        "name": name,
        "dist": "noa-plugin-" + name.replace("_", "-"),
        "module": "noa_plugin_" + name,
        "title": name.replace("_", " ").title(),
    }
    written: list[Path] = []
    for relative, source in _walk(resources.files(__name__).joinpath("files")):
        target = destination / relative.replace("__module__", values["module"])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(Template(source.read_text("utf-8")).substitute(values), "utf-8")
        written.append(target)
    return sorted(written)
