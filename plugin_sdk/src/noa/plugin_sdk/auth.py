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

A transport gets the policy from :func:`access_policy` (the auth plugin's, or
:class:`LoopbackOnly` when none is enabled) and describes each call with
:func:`access_request`, so HTTP routes, WebSockets and other transports are decided by
one policy in one way.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import msgspec
from noa.plugin_sdk.errors import Unauthorized

if TYPE_CHECKING:
    from noa.plugin_sdk.host import Host

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
    "LoopbackOnly",
    "Principal",
    "RateLimit",
    "access_policy",
    "access_request",
    "is_loopback",
    "scope_granted",
]

log = logging.getLogger("noa.auth")

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


_LOCAL = Principal(subject="anonymous:local", scheme="anonymous", scopes=frozenset((ANY_SCOPE,)))
# Where access_policy() keeps the policy it resolved, so every transport of a worker
# shares one (and the fallback is announced once).
_POLICY_STATE_KEY = "noa.access_policy"


class LoopbackOnly:
    """The policy when no auth plugin is enabled: local callers only, with every scope."""

    async def authorize(self, request: AccessRequest) -> Grant:
        if is_loopback(request.peer) and not any(
            name in FORWARDING_HEADERS for name, _ in request.headers
        ):
            return Grant(principal=_LOCAL)
        raise Unauthorized(
            "this server has no authentication enabled and serves local callers only: "
            "enable the 'auth' plugin to accept remote calls",
            code="auth_not_configured",
        )


def access_policy(host: Host) -> AccessPolicy:
    """The policy every transport of this worker asks: the one an auth plugin returns
    from ``noa_access_policy``, else :class:`LoopbackOnly`. Call it at assembly."""
    policy: AccessPolicy | None = host.state.get(_POLICY_STATE_KEY)
    if policy is None:
        policy = host.call_first("noa_access_policy", host=host)
        if policy is None:
            log.warning(
                "no access policy (the 'auth' plugin is disabled): serving local callers only"
            )
            policy = LoopbackOnly()
        host.state[_POLICY_STATE_KEY] = policy
    return policy


def access_request(
    connection: Mapping[str, Any],
    *,
    group: str,
    scope: str,
    resource: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> AccessRequest:
    """The :class:`AccessRequest` of an ASGI ``connection`` scope (``http`` or
    ``websocket``), asking for ``scope`` in route group ``group``. ``headers`` replaces
    the connection's own (a credential that came in another way, such as a WebSocket
    subprotocol or first message, written as an ``Authorization`` header)."""
    client = connection.get("client")
    return AccessRequest(
        method=connection.get("method", "GET"),  # a WebSocket handshake is a GET
        path=connection["path"],
        headers=connection["headers"] if headers is None else headers,
        peer=client[0] if client else None,
        secure=connection.get("scheme") in ("https", "wss"),
        group=group,
        scope=scope,
        resource=resource,
    )
