"""The ``[auth]`` config section. Every key, its default and an example are in
docs/security.md."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from noa.plugin_sdk import PluginConfig, Secret
from noa.plugin_sdk.auth import RateLimit

__all__ = ["AuthConfig", "CapabilityKey", "JwtKey"]

Positive = Annotated[float, msgspec.Meta(gt=0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]


class JwtKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One trusted JWT signer. Exactly one of ``public_key_file``, ``jwks_url`` and
    ``secret``. The algorithms are pinned here, never taken from the token."""

    # Matches the token header's "kid"; "" serves tokens that carry no kid. Leave it
    # empty with jwks_url: keys from a JWKS are matched by the kid each JWK names.
    kid: str = ""
    algorithms: tuple[str, ...]
    # PEM public key (RS256/RS384/RS512, ES256/ES384, PS256, EdDSA).
    public_key_file: str = ""
    # A JWKS endpoint, fetched at start, cached and refreshed: https (plain http only to
    # a loopback address).
    jwks_url: str = ""
    # HS256/HS384/HS512 shared secret: write it as {env = "NOA_JWT_SECRET"}.
    secret: Secret | None = None


class CapabilityKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One HMAC-SHA256 key for capability tokens; write ``secret`` as {env = "..."}."""

    id: str
    secret: Secret


class AuthConfig(PluginConfig, frozen=True):
    # "off": every route that is not public needs credentials. "loopback": a caller on
    # this machine (peer address loopback, no forwarding headers) that sends none acts
    # as "anonymous" with anonymous_scopes. The embedded profile sets "loopback".
    anonymous: Literal["off", "loopback"] = "off"
    anonymous_scopes: tuple[str, ...] = ("*",)
    # Peers (addresses or CIDR networks) whose X-Forwarded-For / Forwarded headers name
    # the real client. From any other peer those headers are ignored.
    trusted_proxies: tuple[str, ...] = ()

    # JWT: trusted keys, the required issuer and audience (compared exactly).
    jwt_keys: tuple[JwtKey, ...] = ()
    jwt_issuer: str = ""
    jwt_audience: str = ""
    # Clock skew allowed on exp, nbf and iat, in seconds.
    jwt_leeway_s: NonNegative = 30.0
    # The claim holding the token's scopes: a space-separated string or a list.
    jwt_scope_claim: str = "scope"
    # A JWKS is fetched again after this long, or when a token names an unknown kid,
    # but never more than once per jwks_cooldown_s, however many unknown kids arrive.
    jwks_refresh_s: Positive = 300.0
    jwks_cooldown_s: Positive = 30.0
    jwks_timeout_s: Positive = 5.0
    # Verified tokens remembered per worker (up to their expiry), so a client reusing a
    # token is not verified again on every call.
    token_cache_entries: Annotated[int, msgspec.Meta(ge=0)] = 10_000
    # A worker re-reads a token's revocation state (jti) at most this often: revoking a
    # jti takes effect on every worker within this delay.
    revocation_check_s: Positive = 0.5

    # Capability tokens: the first key signs, every listed key verifies, so a new key is
    # put first and the old one kept until the tokens it signed have expired.
    capability_keys: tuple[CapabilityKey, ...] = ()
    capability_max_ttl_s: Annotated[int, msgspec.Meta(gt=0)] = 86_400

    # API keys: a worker re-reads a key's record (revocation, expiry) at most this often.
    api_key_cache_s: Positive = 1.0

    # Rate limits by route group name ("inference", "openai-embeddings" ...); the
    # "default" entry covers the others. Empty: no rate limit. An API key's own limit
    # replaces the group's.
    rate_limits: dict[str, RateLimit] = msgspec.field(default_factory=dict)
    # Where the buckets live: "auto" is Redis when [drivers] cache = "redis" (at
    # [cache] redis_url), else this worker's memory.
    rate_limit_store: Literal["auto", "redis", "memory"] = "auto"
    # Longest a Redis rate-limit call may take before the worker falls back to its
    # memory buckets (rate limiting fails open); Redis is tried again after retry_s.
    rate_limit_timeout_s: Positive = 0.25
    rate_limit_retry_s: Positive = 1.0
    # Under load, a worker gathers rate-limit checks for up to this long so they share
    # one Redis round trip (exact all the same); an idle worker never waits. 0: no wait.
    rate_limit_gather_ms: Annotated[float, msgspec.Meta(ge=0, le=50)] = 1.0
