"""NOA's hook specifications, one module per domain.

Hooks run at assembly and lifecycle time, never per request. Registration hooks
(``noa_register_*``) receive a registrar bound to the calling plugin; the kernel calls
them once per enabled plugin in plugin order (config order, then declared
``before``/``after``). The reference in ``docs/hooks.md`` is checked against these
modules by a test.
"""

from __future__ import annotations

from types import ModuleType

from noa.kernel.hookspecs import (
    auth,
    cli,
    inference,
    integrations,
    lifecycle,
    orchestration,
    retrieval,
    storage,
    transport,
)

__all__ = ["HOOKSPEC_MODULES"]

HOOKSPEC_MODULES: tuple[ModuleType, ...] = (
    lifecycle,
    transport,
    auth,
    storage,
    inference,
    retrieval,
    orchestration,
    integrations,
    cli,
)
