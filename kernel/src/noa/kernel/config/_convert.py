"""Turning a merged tree into typed Structs, with errors that name key, value and layer."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from noa.kernel.config._layers import Merged
from noa.plugin_sdk.config import MASK, Secret
from noa.plugin_sdk.errors import ConfigError

__all__ = ["convert_section", "to_display"]

T = TypeVar("T")

_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_UNKNOWN = re.compile(r"unknown field `(?P<field>[^`]+)`")


def _dec_hook(kind: type, value: Any) -> Any:
    if kind is Secret:
        if isinstance(value, str):
            return Secret(value)
        raise TypeError(f"a secret must be a string, not {type(value).__name__}")
    raise TypeError(f"no conversion to {kind!r}")


def convert_section(merged: Merged, prefix: str | None, raw: Any, kind: type[T]) -> T:
    """Validate ``raw`` (the tree at ``prefix``, or the root) as ``kind``."""
    try:
        return msgspec.convert(raw, kind, strict=False, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise _config_error(merged, prefix, str(exc)) from None


def _config_error(merged: Merged, prefix: str | None, message: str) -> ConfigError:
    match = _PATH.search(message)
    reason = _PATH.sub("", message)
    path = match.group("path") if match else ""
    parts = [p for p in re.split(r"\.|\[(\d+)\]", path) if p]
    unknown = _UNKNOWN.search(reason)
    if unknown:
        parts.append(unknown.group("field"))
        section = prefix or parts[0]
        reason = f"unknown key (a typo? docs/configuration.md lists the keys of [{section}])"
    dotted = ".".join([*([prefix] if prefix else []), *parts]) or (prefix or "<root>")
    key_for_lookup = ".".join(p for p in dotted.split(".") if not p.isdigit())
    try:
        value: Any = merged.lookup(dotted)
    except KeyError:
        try:
            value = merged.lookup(key_for_lookup)
        except KeyError:
            value = "<unset>"
    if key_for_lookup in merged.secret_keys:
        value = MASK
    return ConfigError(dotted, value, merged.source_of(key_for_lookup), reason)


def _enc_hook(value: Any) -> Any:
    if isinstance(value, Secret):
        return MASK
    raise TypeError(f"cannot show {type(value).__name__}")


def to_display(value: Any) -> Any:
    """Plain data for showing: Secrets become the mask."""
    return msgspec.to_builtins(value, enc_hook=_enc_hook)
