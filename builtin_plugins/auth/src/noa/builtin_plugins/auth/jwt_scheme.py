"""The ``jwt`` auth scheme: bearer JSON Web Tokens signed by keys the config trusts.

A token is verified with the key its header's ``kid`` names (a configured key whose
``kid`` is ``""`` serves tokens without one; a JWKS key is named by its own kid), under
the algorithms config pins for that key, never the ones the token asks for. ``exp``,
``iss`` and ``aud`` are required; ``iss`` and ``aud`` must equal ``[auth] jwt_issuer``
and ``jwt_audience``; ``exp``, ``nbf`` and a future ``iat`` are checked with
``jwt_leeway_s`` of clock skew; ``sub`` is required. Any defect is an ``Unauthorized``
naming it.

A verified token is remembered by this worker until its ``exp`` (at most
``token_cache_entries`` of them, the oldest forgotten first), so a client that reuses a
token costs a dict lookup and, when the token has a ``jti``, a revocation check
(:mod:`.revocation`). Keys that leave a JWKS drop every remembered token.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from noa.builtin_plugins.auth.config import AuthConfig, JwtKey
from noa.builtin_plugins.auth.jwks import JwksClient, VerifyingKey, usable_algorithms
from noa.builtin_plugins.auth.revocation import REVOKED_PREFIX, RevocationList
from noa.plugin_sdk.auth import Principal
from noa.plugin_sdk.config import MASK
from noa.plugin_sdk.errors import ConfigError, ServiceUnavailable, Unauthorized
from noa.plugin_sdk.ports.cache import CACHE_STATE_KEY

__all__ = ["JwtScheme"]

# Longer than any token an identity provider issues; bounds the memory of the cache.
_MAX_TOKEN_CHARS: Final = 16_384
_LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})
_OPTIONS: Final[jwt.types.Options] = {
    "require": ["exp", "iss", "aud"],
    "enforce_minimum_key_length": True,
}
# PyJWT's exceptions, most specific first, and what the client is told.
_DEFECTS: Final[tuple[tuple[type[Exception], str, str], ...]] = (
    (jwt.ExpiredSignatureError, "token expired", "token_expired"),
    (jwt.InvalidAudienceError, "token has the wrong audience (aud)", "invalid_token"),
    (jwt.InvalidIssuerError, "token has the wrong issuer (iss)", "invalid_token"),
    (jwt.InvalidAlgorithmError, "token algorithm not allowed for its key", "invalid_token"),
    (jwt.InvalidSignatureError, "token has a bad signature", "invalid_token"),
    (jwt.InvalidIssuedAtError, "token has a malformed iat", "invalid_token"),
    (jwt.InvalidKeyError, "token cannot be verified with its key", "invalid_token"),
)

#: One remembered verified token: its principal, its ``exp`` and its ``jti``.
_Verified = tuple[Principal, float, str | None]


class JwtScheme:
    """Verifies bearer JWTs against the ``[auth]`` jwt_* config (see the module doc).

    Construction checks the config and raises ``ConfigError`` for anything a deployment
    must fix; :meth:`start` loads key files, fetches each JWKS and takes the cache.
    """

    name = "jwt"

    def __init__(self, config: AuthConfig) -> None:
        self._config = config
        self._issuer = config.jwt_issuer
        self._audience = config.jwt_audience
        self._leeway_s = config.jwt_leeway_s
        self._scope_claim = config.jwt_scope_claim
        self._capacity = config.token_cache_entries
        self._static: dict[str, VerifyingKey] = {}
        self._files: list[tuple[int, JwtKey]] = []
        self._kids: set[str] = set()  # of the keys not from a JWKS
        self._jwks: list[JwksClient] = []
        self._verified: dict[str, _Verified] = {}
        self._revocations: RevocationList | None = None
        if config.jwt_keys and not config.jwt_issuer:
            raise ConfigError(
                "auth.jwt_issuer", "", "config", "jwt_keys are set: name the iss tokens carry"
            )
        if config.jwt_keys and not config.jwt_audience:
            raise ConfigError(
                "auth.jwt_audience", "", "config", "jwt_keys are set: name the aud tokens carry"
            )
        for index, entry in enumerate(config.jwt_keys):
            self._add_key(index, entry)

    # -- the AuthScheme protocol -----------------------------------------------------------

    def recognises(self, credential: str) -> bool:
        """A JWS compact token: ``eyJ...`` (a JSON header) in three dot-separated parts."""
        return credential.startswith("eyJ") and credential.count(".") == 2

    async def authenticate(self, credential: str) -> Principal:
        """The token's principal; ``Unauthorized`` naming the defect otherwise, or
        ``ServiceUnavailable`` when the revocation list cannot be read or a JWKS that may
        hold the token's key has never been fetched."""
        now = time.time()
        verified = self._verified.get(credential)
        if verified is None or verified[1] <= now:
            if verified is not None:
                self._verified.pop(credential, None)
            verified = await self._verify(credential, now)
        principal, _, jti = verified
        if jti is not None and await self.revocations.is_revoked(jti):
            raise Unauthorized("token revoked", code="token_revoked")
        return principal

    async def start(self, host: Any) -> None:
        """Take the tiered cache from ``host.state``, load key files, fetch each JWKS."""
        cache = host.state.get(CACHE_STATE_KEY)
        if cache is None:
            if not self._config.jwt_keys:
                return  # no token can verify: nothing to revoke
            raise RuntimeError(
                "the jwt scheme needs the tiered cache for revocations: enable 'cache'"
            )
        if self._config.jwt_keys:
            try:  # fail at start, not on every request, when revocations cannot be kept
                await cache.get(REVOKED_PREFIX, durable=True)
            except Exception as exc:
                raise RuntimeError(
                    f"the jwt scheme cannot read durable cache entries: {exc}"
                ) from exc
        for index, entry in self._files:
            self._static[entry.kid] = await _load_key_file(index, entry)
        await asyncio.gather(*(source.start() for source in self._jwks))
        self._revocations = RevocationList(
            cache,
            self._config.revocation_check_s,
            leeway_s=self._leeway_s,
            max_entries=max(1_000, self._capacity),
        )

    async def close(self) -> None:
        """Close the JWKS clients and forget verified tokens. Calling it again does nothing."""
        await asyncio.gather(*(source.close() for source in self._jwks))
        self._verified.clear()

    # -- the rest ----------------------------------------------------------------------------

    @property
    def revocations(self) -> RevocationList:
        """The revocation list (what the admin API calls to revoke a jti); set by start."""
        if self._revocations is None:
            raise RuntimeError("the jwt scheme is not started, or has no cache")
        return self._revocations

    def forget_verified(self) -> None:
        """Forget every remembered token: each is verified again on its next use."""
        self._verified.clear()

    async def _verify(self, token: str, now: float) -> _Verified:
        if len(token) > _MAX_TOKEN_CHARS:
            raise Unauthorized("token too long", code="invalid_token")
        try:
            header = jwt.get_unverified_header(token)
        except Exception:
            raise Unauthorized("malformed token", code="invalid_token") from None
        kid = header.get("kid", "")
        if not isinstance(kid, str):
            raise Unauthorized("malformed token: kid is not a string", code="invalid_token")
        key = await self._key_for(kid)
        if header.get("alg") not in key.algorithms:
            raise Unauthorized("token algorithm not allowed for its key", code="invalid_token")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=list(key.algorithms),
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options=_OPTIONS,
            )
        except Exception as exc:
            raise _defect(exc) from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise Unauthorized("token has no sub", code="invalid_token")
        jti = claims.get("jti") or None  # PyJWT checked it is a string
        exp = float(int(claims["exp"]))  # PyJWT checked it is an integer
        principal = Principal(
            subject=f"jwt:{self._issuer}#{sub}",
            scheme="jwt",
            scopes=_scopes(claims.get(self._scope_claim)),
        )
        verified: _Verified = (principal, exp, jti)
        if self._capacity and exp > now:
            while len(self._verified) >= self._capacity:
                del self._verified[next(iter(self._verified))]
            self._verified[token] = verified
        return verified

    async def _key_for(self, kid: str) -> VerifyingKey:
        key = self._static.get(kid)
        if key is not None:
            return key
        if not self._config.jwt_keys:
            raise Unauthorized(
                "JWTs are not accepted here (no [auth] jwt_keys)", code="invalid_token"
            )
        if not kid:
            raise Unauthorized(
                "token has no kid, and no key without kid is configured", code="invalid_token"
            )
        key = self._from_jwks(kid)
        if key is None and self._jwks:
            # A kid nobody knows may be a rotated-in key: refetch (at most once per
            # cooldown, however many such tokens arrive).
            await asyncio.gather(*(source.refresh() for source in self._jwks))
            key = self._from_jwks(kid)
            if key is None and not all(source.loaded for source in self._jwks):
                raise ServiceUnavailable(
                    "the token issuer's key set cannot be fetched", code="jwks_unavailable"
                )
        if key is None:
            raise Unauthorized("unknown key id", code="invalid_token")
        return key

    def _from_jwks(self, kid: str) -> VerifyingKey | None:
        for source in self._jwks:
            key = source.get(kid)
            if key is not None:
                return key
        return None

    def _add_key(self, index: int, entry: JwtKey) -> None:
        """Check one ``jwt_keys`` entry and keep it (a key file is read at start)."""
        where = f"auth.jwt_keys[{index}]"
        sources = [bool(entry.public_key_file), bool(entry.jwks_url), entry.secret is not None]
        if sources.count(True) != 1:
            raise ConfigError(
                where,
                entry.kid,
                "config",
                "set exactly one of public_key_file, jwks_url and secret",
            )
        if not entry.algorithms:
            raise ConfigError(f"{where}.algorithms", [], "config", "name at least one algorithm")
        known = jwt.algorithms.get_default_algorithms()
        for algorithm in entry.algorithms:
            if algorithm not in known or algorithm == "none":
                raise ConfigError(
                    f"{where}.algorithms",
                    algorithm,
                    "config",
                    f"not a signature algorithm (choose from {sorted(set(known) - {'none'})})",
                )
        symmetric = [a for a in entry.algorithms if a.startswith("HS")]
        if entry.secret is not None and len(symmetric) != len(entry.algorithms):
            raise ConfigError(
                f"{where}.algorithms",
                list(entry.algorithms),
                "config",
                "a secret verifies HS256/HS384/HS512 only",
            )
        if entry.secret is None and symmetric:
            raise ConfigError(
                f"{where}.algorithms",
                list(entry.algorithms),
                "config",
                "HS* algorithms need a secret; a public key never verifies them",
            )
        if entry.jwks_url:
            self._add_jwks(where, entry)
            return
        if entry.kid in self._kids:
            raise ConfigError(f"{where}.kid", entry.kid, "config", "another key has this kid")
        self._kids.add(entry.kid)
        if entry.secret is None:
            self._files.append((index, entry))
            return
        secret = entry.secret.reveal().encode()
        usable, why = usable_algorithms(secret, entry.algorithms)
        if len(usable) != len(entry.algorithms):
            raise ConfigError(f"{where}.secret", MASK, "config", why)
        self._static[entry.kid] = VerifyingKey(secret, usable)

    def _add_jwks(self, where: str, entry: JwtKey) -> None:
        if entry.kid:
            raise ConfigError(
                f"{where}.kid", entry.kid, "config", "a JWKS names its keys: leave kid empty"
            )
        url = urlsplit(entry.jwks_url)
        if url.scheme != "https" and not (url.scheme == "http" and url.hostname in _LOOPBACK_HOSTS):
            raise ConfigError(
                f"{where}.jwks_url",
                entry.jwks_url,
                "config",
                "use https (plain http only to this machine): keys fetched in the clear "
                "can be replaced on the way",
            )
        self._jwks.append(
            JwksClient(
                entry.jwks_url,
                entry.algorithms,
                refresh_s=self._config.jwks_refresh_s,
                cooldown_s=self._config.jwks_cooldown_s,
                timeout_s=self._config.jwks_timeout_s,
                on_change=self.forget_verified,
            )
        )


def _defect(exc: Exception) -> Unauthorized:
    """The 401 for what PyJWT (or anything beneath it) raised on a token."""
    if isinstance(exc, jwt.ImmatureSignatureError):
        if "(iat)" in str(exc):
            return Unauthorized("token issued in the future (iat)", code="invalid_token")
        return Unauthorized("token not yet valid (nbf)", code="invalid_token")
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return Unauthorized(f"token has no {exc.claim} claim", code="invalid_token")
    for kind, message, code in _DEFECTS:
        if isinstance(exc, kind):
            return Unauthorized(message, code=code)
    return Unauthorized("malformed token", code="invalid_token")


def _scopes(value: Any) -> frozenset[str]:
    """Scopes from a space-separated string or a list of strings; nothing from the rest."""
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return frozenset(value)
    return frozenset()


async def _load_key_file(index: int, entry: JwtKey) -> VerifyingKey:
    """The public key (or certificate's key) in ``entry.public_key_file``, checked against
    every algorithm the entry names."""
    where = f"auth.jwt_keys[{index}].public_key_file"
    path = entry.public_key_file
    try:
        data = await asyncio.to_thread(Path(path).read_bytes)
    except OSError as exc:
        raise ConfigError(where, path, "config", f"cannot read it: {exc}") from None
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except Exception as exc:
        raise ConfigError(
            where, path, "config", f"not a PEM public key or certificate ({exc})"
        ) from None
    usable, why = usable_algorithms(key, entry.algorithms)
    if len(usable) != len(entry.algorithms):
        raise ConfigError(where, path, "config", f"cannot verify every algorithm named: {why}")
    return VerifyingKey(key, usable)
