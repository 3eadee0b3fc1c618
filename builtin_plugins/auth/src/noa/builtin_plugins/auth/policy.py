"""The access policy: one decision per request, before its handler runs.

1. The credential: ``Authorization: Bearer <credential>`` or ``X-API-Key: <credential>``.
   None: a local caller may act as ``anonymous`` when ``auth.anonymous = "loopback"``;
   anyone else gets 401.
2. The scheme that recognises the credential's format verifies it (JWT, API key,
   capability token, or one a plugin added) into a principal, or refuses (401).
3. The principal must hold the route's scope, and a principal bound to one resource
   (a capability token) must be on that resource (403).
4. The rate limit of the principal (an API key's own) or of the route group is taken
   from the principal's bucket (429 with ``Retry-After`` past it).

Refusals (401 and 403) are recorded as audit events, off the request's path.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from typing import Any

from noa.builtin_plugins.auth.clientip import ClientAddress
from noa.builtin_plugins.auth.config import AuthConfig
from noa.builtin_plugins.auth.ratelimit import Decision, RateLimiter
from noa.plugin_sdk.audit import AuditEvent, record
from noa.plugin_sdk.auth import (
    FORWARDING_HEADERS,
    AccessRequest,
    AuthScheme,
    Grant,
    Principal,
    RateLimit,
    is_loopback,
)
from noa.plugin_sdk.errors import ApiError, Forbidden, TooManyRequests, Unauthorized
from noa.plugin_sdk.metrics import NoMetrics, metrics_of

__all__ = ["Policy"]

log = logging.getLogger("noa.auth")

#: Longest credential read; longer ones are refused before any scheme sees them.
MAX_CREDENTIAL = 8192
#: Audit events of refusals waiting to be published; past this they are dropped (and
#: counted), so a flood of bad credentials cannot pile up tasks.
MAX_PENDING_AUDIT = 1000
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="noa"'}
# The bucket of a principal that has a daily quota and no rate limit.
_UNLIMITED = RateLimit(per_s=1e9, burst=1_000_000_000)


def _credential(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            kind, _, credential = value.partition(b" ")
            if kind.lower() != b"bearer":
                raise Unauthorized(
                    "the Authorization header must be 'Bearer <token or API key>'",
                    code="bad_credentials",
                    headers=_CHALLENGE,
                )
            value = credential.strip()
        elif name != b"x-api-key":
            continue
        if not value:
            raise Unauthorized("the credential is empty", code="bad_credentials")
        if len(value) > MAX_CREDENTIAL:
            raise Unauthorized("the credential is too long", code="bad_credentials")
        return value.decode("latin-1")
    return None


class Policy:
    """The ``AccessPolicy`` of the auth plugin (see the module docstring)."""

    def __init__(self, config: AuthConfig, schemes: Sequence[AuthScheme]) -> None:
        self.config = config
        self.schemes = tuple(schemes)
        self.client = ClientAddress(config.trusted_proxies)
        self.anonymous_scopes = frozenset(config.anonymous_scopes)
        self.limits = dict(config.rate_limits)
        self.limiter: RateLimiter | None = None
        self._state: dict[str, Any] = {}
        self._pending: set[asyncio.Task[None]] = set()
        self._refusals: Any = NoMetrics().counter("", "")

    def scheme(self, name: str) -> Any:
        """The scheme called ``name`` (``jwt``, ``api_key`` ...), or None."""
        return next((s for s in self.schemes if s.name == name), None)

    async def start(self, host: Any, redis_url: str | None, redis_prefix: str) -> None:
        self._state = host.state
        self._refusals = metrics_of(host.state).counter(
            "auth_refusals_total",
            "Requests refused by authentication (401) or scope (403), by status and code.",
            ("status", "code"),
        )
        for scheme in self.schemes:
            await scheme.start(host)
        # Also without group limits: API keys may carry their own limit or quota.
        self.limiter = RateLimiter(
            redis_url=redis_url,
            prefix=redis_prefix,
            timeout_s=self.config.rate_limit_timeout_s,
            retry_s=self.config.rate_limit_retry_s,
            gather_s=self.config.rate_limit_gather_ms / 1000,
            metrics=metrics_of(host.state),  # counts 429s as auth_rate_limited_total
        )
        await self.limiter.start()
        if self.config.anonymous == "loopback":
            log.warning(
                "auth: callers on this machine may call without credentials, as 'anonymous' "
                'with scopes %s (auth.anonymous = "loopback"); set it to "off" to refuse',
                sorted(self.anonymous_scopes),
            )

    async def close(self) -> None:
        for scheme in self.schemes:
            await scheme.close()
        if self.limiter is not None:
            await self.limiter.close()
        if self._pending:
            await asyncio.wait(self._pending, timeout=2.0)

    async def authorize(self, request: AccessRequest) -> Grant:
        client = self.client.resolve(request.peer, request.headers)
        principal: Principal | None = None
        try:
            principal = await self._authenticate(request, client)
            if not principal.allows(request.scope, request.resource):
                raise Forbidden(self._why_forbidden(principal, request), code="insufficient_scope")
        except (Unauthorized, Forbidden) as exc:
            self._refused(exc, request, client, principal)
            raise
        return await self._rate_limit(principal, request)

    async def _authenticate(self, request: AccessRequest, client: str | None) -> Principal:
        credential = _credential(request.headers)
        if credential is None:
            if self.config.anonymous == "loopback" and self._local(request, client):
                return Principal(
                    subject=f"anonymous:{client}",
                    scheme="anonymous",
                    scopes=self.anonymous_scopes,
                )
            raise Unauthorized(
                "credentials required: send 'Authorization: Bearer <token>' or 'X-API-Key: <key>'",
                code="missing_credentials",
                headers=_CHALLENGE,
            )
        for scheme in self.schemes:
            if scheme.recognises(credential):
                return await scheme.authenticate(credential)
        raise Unauthorized(
            "the credential is not a token or key this server knows",
            code="bad_credentials",
            headers=_CHALLENGE,
        )

    def _local(self, request: AccessRequest, client: str | None) -> bool:
        """The caller is on this machine: a loopback address, and no untrusted proxy
        forwarded the request (a local proxy would make every client look local)."""
        if not is_loopback(client):
            return False
        if self.client.trusted(request.peer):
            return True
        return not any(name in FORWARDING_HEADERS for name, _ in request.headers)

    @staticmethod
    def _why_forbidden(principal: Principal, request: AccessRequest) -> str:
        if principal.resource is not None and principal.resource != request.resource:
            where = request.resource or "a route that names no resource"
            return f"this credential is limited to {principal.resource!r}, not {where!r}"
        return f"this route needs the scope {request.scope!r}, which the credential lacks"

    async def _rate_limit(self, principal: Principal, request: AccessRequest) -> Grant:
        if self.limiter is None:  # not started: only in tests that skip the lifecycle
            return Grant(principal=principal)
        limit: RateLimit | None = principal.rate_limit
        if limit is not None:
            key = principal.subject  # an API key's own limit covers all its calls
        else:
            limit = self.limits.get(request.group) or self.limits.get("default")
            key = f"{principal.subject}|{request.group}"
        if limit is None and principal.quota_per_day is None:
            return Grant(principal=principal)
        decision = await self.limiter.hit(
            key, limit or _UNLIMITED, quota_per_day=principal.quota_per_day
        )
        headers = _rate_headers(decision)
        if not decision.allowed:
            what = "daily quota" if decision.reason == "quota" else "rate limit"
            raise TooManyRequests(
                f"{what} exceeded for {principal.subject}; retry after the Retry-After delay",
                code="quota_exceeded" if decision.reason == "quota" else "rate_limited",
                headers={
                    **dict(headers),
                    "Retry-After": str(max(1, math.ceil(decision.retry_after_s))),
                },
            )
        return Grant(principal=principal, headers=headers)

    def _refused(
        self,
        exc: ApiError,
        request: AccessRequest,
        client: str | None,
        principal: Principal | None,
    ) -> None:
        self._refusals.labels(str(exc.status_code), exc.code or "").inc()
        if len(self._pending) >= MAX_PENDING_AUDIT:
            return
        event = AuditEvent(
            actor=principal.subject if principal is not None else f"ip:{client}",
            action="auth.refused",
            resource=f"{request.method} {request.path}",
            outcome="denied",
            detail={
                "status": exc.status_code,
                "code": exc.code,
                "reason": exc.message,
                "scope": request.scope,
            },
        )
        task = asyncio.get_running_loop().create_task(self._audit(event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _audit(self, event: AuditEvent) -> None:
        try:
            await record(self._state, event)
        except Exception as exc:  # the broker is down: the refusal stands regardless
            log.warning("auth: audit event not recorded (%s: %s)", type(exc).__name__, exc)


def _rate_headers(decision: Decision) -> tuple[tuple[str, str], ...]:
    return (
        ("RateLimit-Limit", str(decision.limit)),
        ("RateLimit-Remaining", str(decision.remaining)),
        ("RateLimit-Reset", str(math.ceil(decision.reset_s))),
    )
