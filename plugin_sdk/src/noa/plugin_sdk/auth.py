"""Authentication and authorisation values shared by the transports and the auth plugin.

Every route declares the scope it needs (``RouteGroup.scope``, or a handler's own
``opt={SCOPE_OPT: ...}``); a route that declares none needs the ``*`` scope, so an
undeclared route is closed to everyone but full administrators (default deny). Before
a handler runs, the transport asks the :class:`AccessPolicy` (built by the enabled auth
plugin through ``noa_access_policy``) for a :class:`Grant`; the policy authenticates
the caller with one of the :class:`AuthScheme` objects plugins contributed through
``noa_register_auth_schemes``, checks the scope and applies rate limits.

Scopes are ``area:action`` strings (``inference:invoke``, ``auth:admin``). A principal
holding ``*`` has every scope, one holding ``area:*`` every scope of that area.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol, runtime_checkable

import msgspec

__all__ = [
    "ANY_SCOPE",
    "FORWARDING_HEADERS",
    "PRINCIPAL_STATE_KEY",
    "RESOURCE_OPT",
    "SCOPE_OPT",
    "AccessPolicy",
    "AccessRequest",
    "AuthScheme",
    "Grant",
    "Principal",
    "RateLimit",
    "is_loopback",
    "scope_granted",
]

#: The scope that grants every other one; also what an undeclared route needs.
ANY_SCOPE = "*"
#: Handler ``opt`` key overriding its route group's scope.
SCOPE_OPT = "noa_scope"
#: Handler ``opt`` key naming the resource a request touches: a template filled from the
#: path parameters (``"model:{model_name}"``) or a function of them returning the
#: resource or None. Capability tokens are checked against it; a capability token is
#: refused on a route that names no resource.
RESOURCE_OPT = "noa_resource"
#: Where a handler finds the authenticated :class:`Principal`: ``request.state[...]``
#: (the ASGI ``scope["state"]``).
PRINCIPAL_STATE_KEY = "principal"


#: Headers a proxy adds: a request carrying one came through a proxy, so its TCP peer
#: being on this machine does not make the caller local.
FORWARDING_HEADERS = frozenset((b"forwarded", b"x-forwarded-for", b"x-real-ip"))
_LOOPBACK_PREFIXES = ("127.", "::ffff:127.")


def is_loopback(address: str | None) -> bool:
    """Whether ``address`` (as ASGI gives a client's) is a loopback address."""
    return address is not None and (address == "::1" or address.startswith(_LOOPBACK_PREFIXES))


def scope_granted(granted: Collection[str], needed: str) -> bool:
    """Whether holding ``granted`` scopes allows an action that needs ``needed``."""
    if needed in granted or ANY_SCOPE in granted:
        return True
    area, sep, _ = needed.partition(":")
    return bool(sep) and f"{area}:*" in granted


class RateLimit(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A token bucket: ``burst`` calls at once, refilled at ``per_s`` calls a second."""

    per_s: float
    burst: int


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who is calling, as a scheme established it.

    ``subject`` is stable and unique across schemes (``jwt:<iss>#<sub>``, ``key:<id>``,
    ``cap:<token id>``, ``anonymous:<ip>``); rate limits are counted per subject.
    ``resource`` is set by capability tokens: such a principal may act on that one
    resource only. ``rate_limit`` and ``quota_per_day`` override the route group's limit
    for this principal (API keys carry their own).
    """

    subject: str
    scheme: str
    scopes: frozenset[str] = frozenset()
    resource: str | None = None
    rate_limit: RateLimit | None = None
    quota_per_day: int | None = None

    def allows(self, scope: str, resource: str | None) -> bool:
        """Whether this principal may do ``scope`` on ``resource``."""
        if self.resource is not None and resource != self.resource:
            return False
        return scope_granted(self.scopes, scope)


@runtime_checkable
class AuthScheme(Protocol):
    """One way of proving who is calling (JWT, API key, capability token ...).

    The policy reads one credential per request (``Authorization: Bearer <credential>``
    or ``X-API-Key: <credential>``) and hands it to the first scheme whose
    :meth:`recognises` is true, so formats must not overlap (a fixed prefix is best).
    """

    name: str

    def recognises(self, credential: str) -> bool:
        """Cheaply: is ``credential`` in this scheme's format? No I/O, no verification."""
        ...

    async def authenticate(self, credential: str) -> Principal:
        """The verified principal, or raise :class:`~noa.plugin_sdk.errors.Unauthorized`
        naming what is wrong (never the library's own exception: any malformed input is
        a 401). May raise ``ServiceUnavailable`` when a backend it needs is down
        (authentication fails closed)."""
        ...

    async def start(self, host: Any) -> None:
        """Acquire what the scheme needs (storage, cache, key files) at server start."""
        ...

    async def close(self) -> None:
        """Release it. Calling it again does nothing."""
        ...


class AccessRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What the policy knows of one request before its handler runs."""

    method: str
    path: str
    headers: list[tuple[bytes, bytes]]  # as ASGI has them: lower-case names
    peer: str | None  # the address of the TCP peer (maybe a proxy)
    secure: bool  # came over TLS
    group: str  # the route group's name, for per-group limits
    scope: str  # the scope the route needs
    resource: str | None  # the resource it touches, if the route names one


class Grant(msgspec.Struct, frozen=True, kw_only=True):
    """An allowed request: who it is and headers for the response (``RateLimit-*``)."""

    principal: Principal
    headers: tuple[tuple[str, str], ...] = ()


class AccessPolicy(Protocol):
    """Decides every non-public request. Raises ``Unauthorized`` (401), ``Forbidden``
    (403), ``TooManyRequests`` (429, with ``Retry-After``) or ``ServiceUnavailable``;
    returns a :class:`Grant` otherwise."""

    async def authorize(self, request: AccessRequest) -> Grant: ...
