"""Layered, typed configuration.

:func:`load` merges every layer (see :mod:`._layers`), resolves secret references and
validates the kernel's own sections. Plugin sections are validated later, once plugins
have registered their Structs, through :meth:`Config.bind_section`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from dotenv import dotenv_values
from noa.kernel.config._convert import convert_section, to_display
from noa.kernel.config._layers import (
    Merged,
    dotted_layer,
    env_layer,
    packaged_profile,
    packaged_profiles,
    toml_layer,
)
from noa.kernel.config._schema import CORE_SLOTS, KERNEL_SECTIONS, KernelSections, PluginsSettings
from noa.plugin_sdk.config import MASK, PluginConfig
from noa.plugin_sdk.errors import ConfigError

__all__ = ["CORE_SLOTS", "BootOptions", "Config", "PluginsSettings", "load"]

C = TypeVar("C", bound=PluginConfig)


class BootOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How to find config: what the CLI was told. Serialised to workers as ``NOA_BOOT``."""

    profile: str | None = None
    config_file: str | None = None
    config_dir: str | None = None
    env_file: str | None = None
    # (dotted key, value, label) from CLI flags, applied last.
    overrides: tuple[tuple[str, Any, str], ...] = ()


class Config:
    """The effective config of one process."""

    def __init__(self, merged: Merged, kernel: KernelSections, layers: list[str]) -> None:
        self._merged = merged
        self.kernel = kernel
        self.layers = layers
        self._sections: dict[str, PluginConfig] = {}

    @property
    def profile(self) -> str:
        return self.kernel.profile

    def bind_section(self, name: str, kind: type[C]) -> C:
        """Validate top-level table ``[name]`` as ``kind`` (defaults when absent)."""
        if name in KERNEL_SECTIONS:
            raise ConfigError(name, "<section>", "plugin registration", "reserved by the kernel")
        raw = self._merged.tree.get(name, {})
        if not isinstance(raw, dict):
            raise ConfigError(name, raw, self._merged.source_of(name), "must be a table")
        value = convert_section(self._merged, name, raw, kind)
        self._sections[name] = value
        return value

    def section(self, name: str, kind: type[C]) -> C:
        value = self._sections.get(name)
        if value is None:
            raise KeyError(f"config section [{name}] is not registered by any enabled plugin")
        if not isinstance(value, kind):
            raise TypeError(
                f"config section [{name}] is a {type(value).__name__}, not {kind.__name__}"
            )
        return value

    def unclaimed_sections(self) -> list[str]:
        """Top-level tables no enabled plugin registered (often a disabled plugin's),
        leaving out those only the packaged profile set: a profile configures plugins a
        deployment may not enable."""
        return sorted(
            k
            for k in self._merged.tree
            if k not in KERNEL_SECTIONS and k not in self._sections and self._user_set(k)
        )

    def _user_set(self, section: str) -> bool:
        return any(
            not layer.startswith("packaged profile")
            for key, layer in self._merged.sources.items()
            if key == section or key.startswith(section + ".")
        )

    def value(self, dotted: str) -> Any:
        values = self._values()
        node: Any = values
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(dotted)
            node = node[part]
        return node

    def _values(self) -> dict[str, Any]:
        values: dict[str, Any] = to_display(self.kernel)
        for name, section in self._sections.items():
            values[name] = to_display(section)
        for name in self.unclaimed_sections():
            values[name] = self._merged.tree[name]
        return values

    def effective(self) -> dict[str, Any]:
        """Every effective value (secrets masked) and the layer each leaf came from."""
        values = self._values()
        _mask(values, (), self._merged.secret_keys)
        sources: dict[str, str] = {}
        _walk_sources(values, (), self._merged, sources)
        return {
            "profile": self.profile,
            "layers": self.layers,
            "values": values,
            "sources": sources,
        }


def _mask(node: dict[str, Any] | list[Any], prefix: tuple[str, ...], secret_keys: set[str]) -> None:
    items = list(node.items() if isinstance(node, dict) else enumerate(node))
    for key, value in items:
        dotted = ".".join((*prefix, str(key)))
        if dotted in secret_keys:
            node[key] = MASK  # type: ignore[index,call-overload]
        elif isinstance(value, dict | list):
            _mask(value, (*prefix, str(key)), secret_keys)


def _walk_sources(
    node: Mapping[str, Any], prefix: tuple[str, ...], merged: Merged, out: dict[str, str]
) -> None:
    for key, value in node.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value:
            _walk_sources(value, path, merged, out)
        else:
            out[".".join(path)] = merged.source_of(".".join(path))


def _choose_profile(
    boot: BootOptions, environ: Mapping[str, str], config_dir: Path
) -> tuple[str, str]:
    if boot.profile:
        return boot.profile, "CLI --profile"
    if environ.get("NOA_PROFILE"):
        return environ["NOA_PROFILE"], "environment NOA_PROFILE"
    default_file = config_dir / "default.toml"
    if default_file.is_file():
        declared = toml_layer(default_file).values.get("profile")
        if isinstance(declared, str):
            return declared, str(default_file)
    return "embedded", "built-in default"


def read_environment(env_file: Path) -> dict[str, str]:
    """The process environment over the dotenv file's values (the environment wins)."""
    values: dict[str, str] = {}
    if env_file.is_file():
        values = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    values.update(os.environ)
    return values


def load(boot: BootOptions, environ: Mapping[str, str] | None = None) -> Config:
    """Merge every layer for ``boot`` and validate the kernel's sections.

    Raises :class:`ConfigError` naming key, value and layer for the first invalid value.
    """
    if environ is None:
        environ = read_environment(Path(boot.env_file or os.environ.get("NOA_ENV_FILE") or ".env"))
    config_dir = Path(boot.config_dir or environ.get("NOA_CONFIG_DIR") or "config")
    profile, profile_source = _choose_profile(boot, environ, config_dir)
    known = packaged_profiles()
    profile_file = config_dir / f"{profile}.toml"
    if profile not in known and not profile_file.is_file():
        raise ConfigError(
            "profile", profile, profile_source, f"unknown profile (known: {', '.join(known)})"
        )

    merged = Merged()
    layers: list[str] = ["built-in defaults"]
    candidates = [packaged_profile(profile)]
    for path in (config_dir / "default.toml", profile_file):
        candidates.append(toml_layer(path) if path.is_file() else None)
    config_file = boot.config_file or environ.get("NOA_CONFIG")
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            given_by = "CLI --config" if boot.config_file else "environment NOA_CONFIG"
            raise ConfigError("--config", config_file, given_by, "file not found")
        candidates.append(toml_layer(path, f"--config {config_file}"))
    candidates.extend(env_layer(environ))
    candidates.extend(dotted_layer(label, key, value) for key, value, label in boot.overrides)
    for layer in candidates:
        if layer is None:
            continue
        merged.apply(layer)
        # One entry for the environment however many variables it contributed.
        label = "environment" if layer.label.startswith("environment ") else layer.label
        if label not in layers:
            layers.append(label)
    merged.tree["profile"] = profile
    merged.sources["profile"] = profile_source
    merged.resolve_secrets(environ)

    kernel_raw = {k: v for k, v in merged.tree.items() if k in KERNEL_SECTIONS}
    kernel = convert_section(merged, None, kernel_raw, KernelSections)
    return Config(merged, kernel, layers)
