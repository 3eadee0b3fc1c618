"""Authentication hooks: plugins contribute schemes that turn a request into a principal."""

from __future__ import annotations

from typing import Any

from noa.plugin_sdk import Registry, hookspec


@hookspec
def noa_register_auth_schemes(schemes: Registry[Any]) -> None:
    """Contribute authentication schemes (JWT, API keys, capability tokens ...).

    Each item is an object that the security plugin knows how to drive: it takes the
    request's credentials and returns a principal or refuses. The consuming plugin
    defines the exact interface and documents it. Called once per worker at assembly.
    Returns nothing.
    """
