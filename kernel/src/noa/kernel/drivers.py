"""Driver slots: exactly one implementation per slot, chosen by ``[drivers]``, via stevedore.

Slot ``x`` loads from entry-point group ``noa.drivers.x``. Only the chosen driver is
imported (so CuPy is never imported unless the ``cuda`` device is chosen). Every load
failure becomes one :class:`DriverLoadError` naming slot, name asked for and names
available.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from noa.plugin_sdk.errors import DriverLoadError
from noa.plugin_sdk.types import DriverSlot
from stevedore import driver as stevedore_driver
from stevedore.exception import NoMatches

__all__ = ["DriverSlots"]

GROUP_PREFIX = "noa.drivers."


class DriverSlots:
    """The declared slots of one process and the drivers loaded for them so far."""

    def __init__(self, choices: Mapping[str, str], slots: Mapping[str, DriverSlot]) -> None:
        self.slots = dict(slots)
        self._choices = {name: slot.default for name, slot in self.slots.items() if slot.default}
        self._choices.update(choices)
        self._loaded: dict[str, Any] = {}

    def choice(self, slot: str) -> str:
        if slot not in self.slots:
            known = ", ".join(sorted(self.slots))
            raise DriverLoadError(slot, "?", [], f"no such slot (slots: {known})")
        name = self._choices.get(slot)
        if not name:
            raise DriverLoadError(slot, "", self.available(slot), f'set [drivers] {slot} = "NAME"')
        return name

    @staticmethod
    def available(slot: str) -> list[str]:
        return sorted({ep.name for ep in entry_points(group=GROUP_PREFIX + slot)})

    def load(self, slot: str) -> Any:
        """The driver object (usually a class) for ``slot``; imported once, then cached."""
        if slot in self._loaded:
            return self._loaded[slot]
        name = self.choice(slot)
        available = self.available(slot)
        if name not in available:
            # Checked here: stevedore would log its own warning before we raise ours.
            raise DriverLoadError(slot, name, available, "no driver of that name is installed")
        failures: list[str] = []

        def on_failure(_manager: Any, entry_point: Any, exc: BaseException) -> None:
            failures.append(f"cannot import {entry_point.value}: {type(exc).__name__}: {exc}")

        try:
            manager = stevedore_driver.DriverManager(
                namespace=GROUP_PREFIX + slot,
                name=name,
                invoke_on_load=False,
                on_load_failure_callback=on_failure,
            )
        except NoMatches:
            cause = failures[0] if failures else "no driver of that name is installed"
            raise DriverLoadError(slot, name, self.available(slot), cause) from None
        except RuntimeError as exc:  # stevedore: several drivers share the name
            raise DriverLoadError(slot, name, self.available(slot), str(exc)) from None
        self._loaded[slot] = manager.driver
        return manager.driver

    def loaded(self) -> dict[str, str]:
        """slot -> driver name, for the slots loaded so far."""
        return {slot: self._choices[slot] for slot in self._loaded}
