"""The start, readiness check and stop that every plugin owning a driver slot repeats.

A plugin that offers the driver config chose for a slot (storage, broker ...) to the
other plugins builds it, starts it, keeps it in ``host.state``, checks it with its
``ping`` and closes it at shutdown; these helpers do that the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from noa.plugin_sdk.config import MASK
from noa.plugin_sdk.errors import ConfigError
from noa.plugin_sdk.host import Host
from noa.plugin_sdk.types import CheckResult, HealthCheck

__all__ = ["close_driver", "ping_check", "start_driver"]


async def start_driver(
    host: Host, slot: str, state_key: str, *, build: Callable[[Any], Any], url_key: str
) -> Any:
    """Build the slot's driver with ``build(driver_class)``, await its ``start()`` when
    it has one, and keep it as ``host.state[state_key]``.

    A ``ValueError`` from ``build`` (a malformed URL) becomes a :class:`ConfigError`
    naming ``url_key`` and the layer that set it; the value stays masked.
    """
    driver_class = host.driver(slot)
    try:
        instance = build(driver_class)
    except ValueError as exc:
        layer = host.effective_config()["sources"].get(url_key, "built-in default")
        raise ConfigError(url_key, MASK, layer, str(exc)) from None
    start = getattr(instance, "start", None)
    if start is not None:
        await start()
    host.state[state_key] = instance
    return instance


def ping_check(host: Host, slot: str, state_key: str, timeout_s: float = 2.0) -> HealthCheck:
    """A critical readiness check: the started driver answers its ``ping``."""
    instance = host.state[state_key]
    name = host.config_value(f"drivers.{slot}")

    async def check() -> CheckResult:
        if await instance.ping():
            return CheckResult()
        return CheckResult(status="failing", detail=f"{slot} driver {name!r} unreachable")

    return HealthCheck(check=check, timeout_s=timeout_s)


async def close_driver(host: Host, state_key: str) -> None:
    """Close the object kept as ``host.state[state_key]``, if any, and forget it."""
    instance = host.state.pop(state_key, None)
    if instance is not None:
        await instance.close()
