"""Who may open a WebSocket: the credential, wherever it came, put to the access policy.

A WebSocket is not an HTTP route, so the HTTP core's access check never sees it (its
route group is declared public); it is checked here instead, by the same
:class:`~noa.plugin_sdk.auth.AccessPolicy` (the auth plugin's, or ``LoopbackOnly``)
with the same request description. The credential may come in three ways:

1. an ``Authorization: Bearer ...`` or ``X-API-Key`` header on the handshake;
2. the ``Sec-WebSocket-Protocol`` offer ``bearer.<credential>`` next to ``noa.v1``
   (browsers cannot set headers); the server echoes ``noa.v1`` only;
3. a first frame ``{"type":"auth","token":"..."}`` within ``auth_timeout_s``.

Ways 2 and 3 are handed to the policy as an ``Authorization`` header, so every scheme
(JWT, API key, capability token) works in every way. A connection that brings none is
put to the policy as it is: a local caller may be anonymous where the policy allows it.
The policy's rate limit applies once, at connect.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from noa.builtin_plugins.streaming.frames import BEARER_PREFIX, PROTOCOL
from noa.plugin_sdk.auth import AccessPolicy, Grant, access_request

__all__ = ["Gate", "offered"]

_CREDENTIAL_HEADERS = (b"authorization", b"x-api-key")
# Handshake headers a request made on the connection's behalf does not inherit.
_HANDSHAKE_ONLY = (b"upgrade", b"connection", b"content-length", b"content-type")


def offered(connection: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The subprotocol to echo (``noa.v1`` when offered) and the credential offered as
    ``bearer.<credential>``, from the handshake."""
    protocols: Sequence[str] = connection.get("subprotocols") or ()
    credential = next(
        (p[len(BEARER_PREFIX) :] for p in protocols if p.startswith(BEARER_PREFIX)), None
    )
    return (PROTOCOL if PROTOCOL in protocols else None), credential or None


def has_credential_header(connection: Mapping[str, Any]) -> bool:
    return any(name in _CREDENTIAL_HEADERS for name, _ in connection["headers"])


def credential_headers(
    connection: Mapping[str, Any], credential: str | None
) -> list[tuple[bytes, bytes]]:
    """The connection's headers as the policy (and requests made on the connection's
    behalf) should see them: without the handshake's own, and with ``credential`` as
    the ``Authorization`` header when it came another way."""
    headers = [
        (name, value)
        for name, value in connection["headers"]
        if not name.startswith(b"sec-websocket-")
        and name not in _HANDSHAKE_ONLY
        and (credential is None or name not in _CREDENTIAL_HEADERS)
    ]
    if credential is not None:
        headers.append((b"authorization", b"Bearer " + credential.encode("latin-1", "replace")))
    return headers


class Gate:
    """The access check of one WebSocket endpoint."""

    __slots__ = ("group", "policy", "scope")

    def __init__(self, policy: AccessPolicy, *, group: str, scope: str) -> None:
        self.policy = policy
        self.group = group
        self.scope = scope

    async def authorize(
        self, connection: Mapping[str, Any], headers: list[tuple[bytes, bytes]]
    ) -> Grant:
        """The grant, or the policy's ``ApiError`` (401, 403, 429, 503)."""
        return await self.policy.authorize(
            access_request(connection, group=self.group, scope=self.scope, headers=headers)
        )
