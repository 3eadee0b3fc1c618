"""Config building blocks for plugins: the section base class and the secret type.

A plugin describes its section (``[plugins.<name>]``) as a frozen msgspec Struct that
subclasses :class:`PluginConfig`; the kernel validates the merged layers against it and
reports any invalid value by key, value and layer. Unknown keys are refused, so a typo in
a config file is an error rather than a silently ignored setting.

A value typed :class:`Secret` may be written in any layer as a plain string or as a
reference, ``{env = "NAME"}`` or ``{file = "PATH"}``. It is resolved once at load
time and masked wherever config is shown or logged.
"""

from __future__ import annotations

import msgspec

__all__ = ["MASK", "PluginConfig", "Secret"]

MASK = "********"


class PluginConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base class of a plugin's config section. Give every field a default."""


class Secret:
    """A string that never shows itself: ``str()``/``repr()`` give a mask.

    Call :meth:`reveal` where the real value is needed (a password handed to a driver).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)
