"""Authentication hooks: schemes that turn a credential into a principal, and the policy
that every transport asks before a handler runs (see ``noa.plugin_sdk.auth``)."""

from __future__ import annotations

from typing import Any

from noa.plugin_sdk import Host, Registry, hookspec


@hookspec
def noa_register_auth_schemes(schemes: Registry[Any], host: Host) -> None:
    """Contribute authentication schemes: ``schemes.add("jwt", scheme)``.

    ``host`` gives the plugin's config section (``host.section(...)``) to build them.

    Each item is a :class:`noa.plugin_sdk.auth.AuthScheme`: it recognises its own
    credential format (by prefix) and verifies a credential into a ``Principal``. The
    auth plugin starts them with the server and asks them in plugin order. Called once
    per worker at assembly. Returns nothing.
    """


@hookspec(firstresult=True)
def noa_access_policy(host: Host) -> Any:
    """Return the :class:`noa.plugin_sdk.auth.AccessPolicy` every transport asks before
    a non-public handler runs, or ``None`` to pass.

    ``firstresult``: the first plugin that returns one wins (the built-in ``auth``
    plugin). With none enabled, the transports serve loopback callers only. Called once
    per worker at assembly; the policy acquires its resources at startup.
    """
