"""Access control on every route: the declared scope is checked before the handler runs.

``AccessLayer`` is Litestar middleware, so it runs after routing and reads what the
matched handler declares in its resolved ``opt`` (its route group's scope, public flag
and name, or the handler's own overrides). Public routes pass; every other request goes
to the access policy the auth plugin built (``noa_access_policy``), which authenticates,
checks the scope and the resource, and applies rate limits. A refusal is raised as an
``ApiError`` and answered in the route's error shape by the exception handlers.

With no auth plugin enabled, :class:`LoopbackOnly` stands in: callers on this machine
are served, everyone else gets 401. The server is never open by omission.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from noa.plugin_sdk.auth import (
    ANY_SCOPE,
    PRINCIPAL_STATE_KEY,
    RESOURCE_OPT,
    SCOPE_OPT,
    AccessPolicy,
    AccessRequest,
    Grant,
    Principal,
)
from noa.plugin_sdk.errors import Unauthorized
from noa.plugin_sdk.transport import ASGIApp, Message, Receive, Scope, Send

__all__ = ["GROUP_OPT", "PUBLIC_OPT", "AccessLayer", "LoopbackOnly", "is_local_call"]

log = logging.getLogger("noa.http")

#: Handler ``opt`` keys the HTTP core sets from the route group.
GROUP_OPT = "noa_group"
PUBLIC_OPT = "noa_public"

_FORWARDING = frozenset((b"forwarded", b"x-forwarded-for", b"x-real-ip"))


def is_local_call(peer: str | None, headers: list[tuple[bytes, bytes]]) -> bool:
    """The TCP peer is a loopback address and no proxy forwarded the request: a proxy
    on this machine would make every remote client look local."""
    if peer is None:
        return False
    try:
        if not ipaddress.ip_address(peer).is_loopback:
            return False
    except ValueError:
        return False
    return not any(name in _FORWARDING for name, _ in headers)


class LoopbackOnly:
    """The policy when no auth plugin is enabled: local callers only, with every scope."""

    async def authorize(self, request: AccessRequest) -> Grant:
        if is_local_call(request.peer, request.headers):
            return Grant(
                principal=Principal(
                    subject=f"anonymous:{request.peer}",
                    scheme="anonymous",
                    scopes=frozenset((ANY_SCOPE,)),
                )
            )
        raise Unauthorized(
            "this server has no authentication enabled and serves local callers only: "
            "enable the 'auth' plugin to accept remote calls",
            code="auth_not_configured",
        )


class AccessLayer:
    """Asks the policy about every non-public request; adds the grant's headers."""

    __slots__ = ("app", "policy")

    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler: Any = scope.get("route_handler")
        opt = handler.opt if handler is not None else {}
        if opt.get(PUBLIC_OPT) or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        resource = opt.get(RESOURCE_OPT)
        if resource is not None:
            params = scope["path_params"]
            resource = resource(params) if callable(resource) else resource.format_map(params)
        client = scope.get("client")
        grant = await self.policy.authorize(
            AccessRequest(
                method=scope.get("method", "GET"),
                path=scope["path"],
                headers=scope["headers"],
                peer=client[0] if client else None,
                secure=scope.get("scheme") in ("https", "wss"),
                group=opt.get(GROUP_OPT, ""),
                scope=opt.get(SCOPE_OPT, ANY_SCOPE),
                resource=resource,
            )
        )
        scope["state"][PRINCIPAL_STATE_KEY] = grant.principal
        if not grant.headers:
            await self.app(scope, receive, send)
            return
        added = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in grant.headers]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*(message.get("headers") or ()), *added]
            await send(message)

        await self.app(scope, receive, send_with_headers)
