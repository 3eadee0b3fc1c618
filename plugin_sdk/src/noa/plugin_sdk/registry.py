"""Registrars: the objects that ``noa_register_*`` hooks receive.

A registrar validates each contribution at once and records which plugin made it, so a
duplicate is refused with both plugins named. The kernel binds the registrar to each
plugin in turn (:meth:`Registry.bind`) before calling that plugin's hook implementation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from noa.plugin_sdk.errors import RegistrationError

__all__ = ["Contribution", "Registry"]

T = TypeVar("T")


class Contribution(Generic[T]):
    """One registered item and the plugin that contributed it."""

    __slots__ = ("item", "name", "plugin")

    def __init__(self, name: str, item: T, plugin: str) -> None:
        self.name = name
        self.item = item
        self.plugin = plugin

    def __repr__(self) -> str:
        return f"Contribution({self.name!r}, plugin={self.plugin!r})"


class Registry(Generic[T]):
    """Named contributions of one kind (task types, models, providers ...).

    ``kind`` is used in error messages ("task type 'embed' is already registered by ...").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Contribution[T]] = {}
        self._plugin = "<unbound>"

    def bind(self, plugin: str) -> None:
        """Attribute the following contributions to ``plugin`` (called by the kernel)."""
        self._plugin = plugin

    @property
    def current_plugin(self) -> str:
        return self._plugin

    def add(self, name: str, item: T) -> None:
        """Register ``item`` under ``name``; refuses an empty or duplicate name."""
        if not name or not isinstance(name, str):
            raise RegistrationError(
                f"plugin {self._plugin!r} registered a {self.kind} with an invalid name {name!r}"
            )
        existing = self._items.get(name)
        if existing is not None:
            raise RegistrationError(
                f"{self.kind} {name!r} from plugin {self._plugin!r} is already registered "
                f"by plugin {existing.plugin!r}"
            )
        self._items[name] = Contribution(name, item, self._plugin)

    def get(self, name: str) -> T:
        try:
            return self._items[name].item
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise KeyError(f"no {self.kind} named {name!r} (registered: {known})") from None

    def contributions(self) -> list[Contribution[T]]:
        """Every contribution, in registration order."""
        return list(self._items.values())

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
