"""Reading config layers and merging them, remembering where every value came from.

Layers, later wins: built-in defaults (the Structs' own), the packaged profile
(``noa/kernel/profiles/<profile>.toml``), ``<config dir>/default.toml``,
``<config dir>/<profile>.toml``, ``--config FILE``, the environment (``NOA_SECTION__KEY``,
``.env`` loaded first) and CLI flags.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from noa.plugin_sdk.errors import ConfigError

__all__ = ["BOOTSTRAP_ENV", "Layer", "Merged", "SecretRef", "env_layer", "toml_layer"]

# Environment variables that steer loading itself rather than naming a config key.
BOOTSTRAP_ENV = frozenset(
    {"NOA_PROFILE", "NOA_CONFIG", "NOA_CONFIG_DIR", "NOA_ENV_FILE", "NOA_BOOT"}
)
ENV_PREFIX = "NOA_"


class SecretRef:
    """``{env = "NAME"}`` or ``{file = "PATH"}`` as written in a layer, resolved after merging."""

    __slots__ = ("kind", "target")

    def __init__(self, kind: str, target: str) -> None:
        self.kind = kind
        self.target = target

    def describe(self) -> str:
        return f'{{{self.kind} = "{self.target}"}}'

    def resolve(self, key: str, layer: str, environ: Mapping[str, str]) -> str:
        if self.kind == "env":
            value = environ.get(self.target)
            if value is None:
                raise ConfigError(
                    key, self.describe(), layer, f"environment variable {self.target} is not set"
                )
            return value
        try:
            return Path(self.target).expanduser().read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                key, self.describe(), layer, f"cannot read secret file: {exc.strerror}"
            ) from None


class Layer:
    """One source of values: a nested mapping and the label it is reported under."""

    __slots__ = ("label", "values")

    def __init__(self, label: str, values: Mapping[str, Any]) -> None:
        self.label = label
        self.values = values


class Merged:
    """The merged tree plus ``sources``: dotted key -> label of the layer that set it."""

    def __init__(self) -> None:
        self.tree: dict[str, Any] = {}
        self.sources: dict[str, str] = {}
        self.secret_keys: set[str] = set()

    def apply(self, layer: Layer) -> None:
        self._merge(self.tree, layer.values, (), layer.label)

    def _merge(
        self, into: dict[str, Any], values: Mapping[str, Any], prefix: tuple[str, ...], label: str
    ) -> None:
        for raw_key, value in values.items():
            key = str(raw_key)
            path = (*prefix, key)
            dotted = ".".join(path)
            ref = _as_secret_ref(value)
            if ref is not None:
                into[key] = ref
                self._record(dotted, label)
            elif isinstance(value, Mapping):
                current = into.get(key)
                if not isinstance(current, dict):
                    current = {}
                    into[key] = current
                self._merge(current, value, path, label)
            else:
                into[key] = value
                self._record(dotted, label)

    def _record(self, dotted: str, label: str) -> None:
        # A later layer replacing a table's leaf replaces the source of everything under it.
        for key in [k for k in self.sources if k.startswith(dotted + ".")]:
            del self.sources[key]
        self.sources[dotted] = label

    def source_of(self, dotted: str) -> str:
        """The layer that set ``dotted`` or its nearest parent; built-in default if none."""
        probe = dotted
        while probe:
            if probe in self.sources:
                return self.sources[probe]
            probe = probe.rpartition(".")[0]
        return "built-in default"

    def resolve_secrets(self, environ: Mapping[str, str]) -> None:
        """Replace every secret reference with its value; remember those keys to mask."""
        self._resolve(self.tree, (), environ)

    def _resolve(
        self, node: dict[str, Any] | list[Any], prefix: tuple[str, ...], environ: Mapping[str, str]
    ) -> None:
        items: Iterable[tuple[Any, Any]] = (
            node.items() if isinstance(node, dict) else enumerate(node)
        )
        for key, value in list(items):
            dotted = ".".join((*prefix, str(key)))
            # In a list (an array of tables), a reference is still a plain mapping.
            ref = value if isinstance(value, SecretRef) else _as_secret_ref(value)
            if ref is not None:
                node[key] = ref.resolve(dotted, self.source_of(dotted), environ)
                self.secret_keys.add(dotted)
            elif isinstance(value, dict | list):
                self._resolve(value, (*prefix, str(key)), environ)

    def lookup(self, dotted: str) -> Any:
        node: Any = self.tree
        for part in dotted.split("."):
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
            else:
                raise KeyError(dotted)
        return node


def _as_secret_ref(value: Any) -> SecretRef | None:
    if isinstance(value, Mapping) and len(value) == 1:
        ((kind, target),) = value.items()
        if kind in ("env", "file") and isinstance(target, str):
            return SecretRef(kind, target)
    return None


def toml_layer(path: Path, label: str | None = None) -> Layer:
    """Read one TOML file; a syntax error names the file, line and column."""
    shown = label or str(path)
    try:
        with path.open("rb") as handle:
            return Layer(shown, tomllib.load(handle))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("<file>", str(path), shown, f"invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError("<file>", str(path), shown, f"cannot read: {exc.strerror}") from None


def packaged_profile(profile: str) -> Layer | None:
    """The profile baseline shipped inside the kernel package, if there is one."""
    resource = resources.files("noa.kernel.profiles").joinpath(f"{profile}.toml")
    if not resource.is_file():
        return None
    return Layer(f"packaged profile {profile}", tomllib.loads(resource.read_text("utf-8")))


def packaged_profiles() -> list[str]:
    folder = resources.files("noa.kernel.profiles")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def env_layer(environ: Mapping[str, str]) -> Iterable[Layer]:
    """One layer per ``NOA_SECTION__KEY`` variable, so each value names its variable.

    A value that starts with ``[`` or ``{`` is read as JSON (lists and tables); anything
    else stays a string and is converted to the field's type when validated.
    """
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in BOOTSTRAP_ENV:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if not all(parts):
            continue
        raw = environ[name]
        value: Any = raw
        if raw[:1] in ("[", "{"):
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    ".".join(parts), raw, f"environment {name}", f"invalid JSON: {exc.msg}"
                ) from None
        tree: dict[str, Any] = {parts[-1]: value}
        for part in reversed(parts[:-1]):
            tree = {part: tree}
        yield Layer(f"environment {name}", tree)


def dotted_layer(label: str, dotted: str, value: Any) -> Layer:
    """A layer setting one dotted key (CLI flags)."""
    parts = dotted.split(".")
    tree: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        tree = {part: tree}
    return Layer(label, tree)
