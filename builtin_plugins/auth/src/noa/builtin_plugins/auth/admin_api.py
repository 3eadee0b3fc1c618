"""The auth admin API: API keys (``/v1/admin/keys``), capability tokens
(``/v1/admin/capabilities``) and JWT revocations (``/v1/admin/tokens/revocations``).
Mounted under the ``auth:admin`` scope; every change is
recorded as an audit event whose actor is the calling principal."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, delete, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, JSONBody
from noa.builtin_plugins.auth.apikeys import (
    ID_PATTERN,
    MAX_SCOPES,
    ApiKeyRecord,
    ApiKeyScheme,
    ApiKeyStore,
    CreatedApiKey,
)
from noa.builtin_plugins.auth.capability import mint, verify
from noa.builtin_plugins.auth.config import AuthConfig
from noa.builtin_plugins.auth.jwt_scheme import JwtScheme
from noa.plugin_sdk import Host
from noa.plugin_sdk.audit import AuditEvent, record
from noa.plugin_sdk.auth import PRINCIPAL_STATE_KEY, RateLimit
from noa.plugin_sdk.errors import NotFound, ServiceUnavailable
from noa.plugin_sdk.ports.storage import STORAGE_STATE_KEY

__all__ = [
    "CapabilityRequest",
    "CapabilityToken",
    "KeyCreate",
    "KeyList",
    "Revocation",
    "admin_handlers",
]

# The format is checked by the store, whose message says what a scope looks like.
Scope = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Scopes = Annotated[list[Scope], msgspec.Meta(min_length=1, max_length=MAX_SCOPES)]
_TEN_YEARS_S = 10 * 365 * 86_400


class RateLimitIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    per_s: Annotated[float, msgspec.Meta(gt=0, le=1_000_000)]
    burst: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]


class KeyCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A new API key: its name, its scopes, and optionally a lifetime and limits."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    scopes: Scopes
    # Seconds from now; absent: the key does not expire.
    expires_in_s: Annotated[int, msgspec.Meta(gt=0, le=_TEN_YEARS_S)] | None = None
    # This key's own limit, replacing its route groups' limits.
    rate_limit: RateLimitIn | None = None
    quota_per_day: Annotated[int, msgspec.Meta(ge=1)] | None = None


class KeyList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[ApiKeyRecord]


class CapabilityRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A capability token for ``actions`` on one ``resource`` ("model:foo")."""

    resource: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    actions: Scopes
    ttl_s: Annotated[int, msgspec.Meta(gt=0)]
    subject: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None


class CapabilityToken(msgspec.Struct, kw_only=True):
    token: str
    jti: str
    resource: str
    actions: list[str]
    expires_at: int  # seconds since the epoch


class Revocation(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Revoke the JWT whose ``jti`` claim this is, until ``expires_at`` (its ``exp``,
    seconds since the epoch; after it the token is refused as expired anyway)."""

    jti: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    expires_at: Annotated[float, msgspec.Meta(gt=0)]


def _actor(request: Request[Any, Any, Any]) -> str:
    principal = request.scope.get("state", {}).get(PRINCIPAL_STATE_KEY)
    return str(getattr(principal, "subject", None) or "anonymous")


def _request_id(request: Request[Any, Any, Any]) -> str | None:
    value = request.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else None


def admin_handlers(
    host: Host,
    config: AuthConfig,
    *,
    key_scheme: ApiKeyScheme | None = None,
    jwt_scheme: JwtScheme | None = None,
) -> list[HTTPRouteHandler]:
    """The admin route handlers. The storage port is read from ``host.state`` per
    request, so the handlers may be built before the server starts. ``key_scheme``, when
    given, forgets a revoked key at once in this worker; ``jwt_scheme`` keeps the JWT
    revocation list."""
    state = host.state

    def store() -> ApiKeyStore:
        storage = state.get(STORAGE_STATE_KEY)
        if storage is None:
            raise ServiceUnavailable("API keys need the storage plugin, which has not started")
        return ApiKeyStore(storage)

    async def audit(
        request: Request[Any, Any, Any], action: str, resource: str, **detail: Any
    ) -> None:
        event = AuditEvent(
            actor=_actor(request),
            action=action,
            resource=resource,
            request_id=_request_id(request),
            detail=detail,
        )
        await record(state, event)

    @post("/v1/admin/keys", summary="Create an API key", tags=["admin"], status_code=201)
    async def create_key(
        data: JSONBody[KeyCreate], request: Request[Any, Any, Any]
    ) -> CreatedApiKey:
        """A new API key with the given scopes. The answer holds the key itself
        (``key``, ``noa_sk_...``): it is shown only here, the server keeps its hash."""
        rate = data.rate_limit
        created = await store().create(
            data.name,
            data.scopes,
            expires_at=None if data.expires_in_s is None else time.time() + data.expires_in_s,
            rate_limit=None if rate is None else RateLimit(per_s=rate.per_s, burst=rate.burst),
            quota_per_day=data.quota_per_day,
            created_by=_actor(request),
        )
        await audit(
            request,
            "auth.key.create",
            f"api_key:{created.id}",
            name=created.name,
            scopes=list(created.scopes),
            expires_at=created.expires_at,
        )
        return created

    @get("/v1/admin/keys", summary="List API keys", tags=["admin"])
    async def list_keys() -> KeyList:
        """Every API key, revoked and expired ones too; never a key or its hash."""
        return KeyList(data=await store().list())

    async def find(key_id: str) -> ApiKeyRecord:
        found = await store().get(key_id) if ID_PATTERN.fullmatch(key_id) else None
        if found is None:
            raise NotFound(f"no API key {key_id!r}", code="api_key_not_found", param="key_id")
        return found

    @get("/v1/admin/keys/{key_id:str}", summary="Show an API key", tags=["admin"])
    async def show_key(key_id: FromPath[str]) -> ApiKeyRecord:
        """One API key's record; 404 when there is no such key."""
        return await find(key_id)

    @delete("/v1/admin/keys/{key_id:str}", summary="Revoke an API key", tags=["admin"])
    async def revoke_key(key_id: FromPath[str], request: Request[Any, Any, Any]) -> None:
        """Revoke a key: every worker refuses it within ``auth.api_key_cache_s``.
        Revoking a revoked key does nothing; 404 when there is no such key."""
        before = await find(key_id)
        await store().revoke(key_id)
        if key_scheme is not None:
            key_scheme.forget(key_id)
        if before.revoked_at is None:
            await audit(request, "auth.key.revoke", f"api_key:{key_id}", name=before.name)

    @post(
        "/v1/admin/capabilities",
        summary="Mint a capability token",
        tags=["admin"],
        status_code=201,
    )
    async def mint_capability(
        data: JSONBody[CapabilityRequest], request: Request[Any, Any, Any]
    ) -> CapabilityToken:
        """A token granting ``actions`` on ``resource`` only, for ``ttl_s`` seconds (at
        most ``auth.capability_max_ttl_s``). 409 when no capability key is configured."""
        max_ttl = config.capability_max_ttl_s
        signing_keys = config.capability_keys
        now = time.time()
        token = mint(
            signing_keys,
            data.resource,
            data.actions,
            data.ttl_s,
            max_ttl_s=max_ttl,
            subject=data.subject,
            now=now,
        )
        claims = verify(signing_keys, token, max_ttl_s=max_ttl, now=now)
        await audit(
            request,
            "auth.capability.mint",
            claims.res,
            jti=claims.jti,
            actions=claims.act,
            ttl_s=data.ttl_s,
            subject=claims.sub,
        )
        return CapabilityToken(
            token=token,
            jti=claims.jti,
            resource=claims.res,
            actions=claims.act,
            expires_at=claims.exp,
        )

    @post(
        "/v1/admin/tokens/revocations",
        summary="Revoke a JWT by its jti",
        tags=["admin"],
        status_code=204,
    )
    async def revoke_token(data: JSONBody[Revocation], request: Request[Any, Any, Any]) -> None:
        """Every worker refuses tokens with this ``jti`` within
        ``auth.revocation_check_s``, until ``expires_at``."""
        if jwt_scheme is None:
            raise ServiceUnavailable("JWT revocation needs the jwt scheme")
        await jwt_scheme.revocations.revoke(data.jti, data.expires_at)
        await audit(request, "auth.jwt.revoke", f"jti:{data.jti}", expires_at=data.expires_at)

    return [create_key, list_keys, show_key, revoke_key, mint_capability, revoke_token]
