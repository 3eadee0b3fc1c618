"""Capability tokens: short-lived, HMAC-signed permission to do listed actions on one
resource, handed to a caller that has no account (a browser, a job, a partner).

Format: ``noacap1.<payload>.<signature>``. ``payload`` is the base64url (no padding) of
a JSON object: ``kid`` (the configured key that signed it), ``jti`` (the token's id),
``res`` (the one resource: ``"model:foo"``, ``"plugin:hello"``), ``act`` (the scopes it
grants there), ``iat`` and ``exp`` (seconds since the epoch) and an optional ``sub`` (who
it was minted for). ``signature`` is the base64url HMAC-SHA256, under that key's secret,
of the exact text ``noacap1.<payload>``.

The first key of ``auth.capability_keys`` signs; any listed key verifies, by ``kid``.
To rotate, put a new key first and keep the old one listed until its tokens expire.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import msgspec
from noa.builtin_plugins.auth.apikeys import validate_scopes
from noa.builtin_plugins.auth.config import AuthConfig, CapabilityKey
from noa.plugin_sdk.auth import Principal
from noa.plugin_sdk.config import MASK
from noa.plugin_sdk.errors import ConfigError, Conflict, Unauthorized, Unprocessable

__all__ = [
    "DEFAULT_LEEWAY_S",
    "MIN_SECRET_LENGTH",
    "TOKEN_PREFIX",
    "CapabilityClaims",
    "CapabilityScheme",
    "check_keys",
    "mint",
    "verify",
]

TOKEN_PREFIX = "noacap1."
#: Clock skew allowed between the minting and the verifying machine, in seconds.
DEFAULT_LEEWAY_S = 2.0
MIN_SECRET_LENGTH = 32
_MAX_TOKEN_LENGTH = 4096
_MAX_RESOURCE_LENGTH = 256
_MAX_SUBJECT_LENGTH = 200
_B64 = re.compile(r"[A-Za-z0-9_-]*")

_Label = Annotated[str, msgspec.Meta(min_length=1, max_length=_MAX_RESOURCE_LENGTH)]


class CapabilityClaims(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """A token's payload, as signed."""

    kid: _Label
    jti: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    res: _Label
    act: Annotated[list[str], msgspec.Meta(min_length=1, max_length=64)]
    iat: int
    exp: int
    sub: str | None = None


_decode_claims = msgspec.json.Decoder(CapabilityClaims).decode


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    # Strict: only the url-safe alphabet, and only the canonical spelling of the bytes.
    if not _B64.fullmatch(text):
        raise ValueError("not base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64encode(raw) != text:
        raise ValueError("not canonical base64url")
    return raw


def _sign(key: CapabilityKey, signed: str) -> bytes:
    return hmac.new(key.secret.reveal().encode(), signed.encode("ascii"), hashlib.sha256).digest()


def check_keys(keys: Sequence[CapabilityKey]) -> None:
    """Raise ``ValueError`` naming the problem when the configured keys are unusable:
    an empty or duplicate id, or a secret shorter than :data:`MIN_SECRET_LENGTH`."""
    seen: set[str] = set()
    for index, key in enumerate(keys):
        if not key.id or len(key.id) > 64 or not key.id.isprintable():
            raise ValueError(f"capability_keys[{index}].id must be 1 to 64 printable characters")
        if key.id in seen:
            raise ValueError(f"capability_keys[{index}].id {key.id!r} is listed twice")
        seen.add(key.id)
        if len(key.secret.reveal()) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"capability_keys[{index}] ({key.id!r}): the secret needs at least "
                f"{MIN_SECRET_LENGTH} characters (e.g. `openssl rand -base64 48`)"
            )


def _check_text(value: str, param: str, max_length: int) -> str:
    if (
        not value
        or len(value) > max_length
        or not value.isprintable()
        or any(c.isspace() for c in value)
    ):
        raise Unprocessable(
            f"{param} must be 1 to {max_length} printable characters without spaces",
            param=param,
        )
    return value


def mint(
    keys: Sequence[CapabilityKey],
    resource: str,
    actions: Iterable[str],
    ttl_s: int,
    *,
    max_ttl_s: int,
    subject: str | None = None,
    now: float | None = None,
) -> str:
    """A token granting ``actions`` on ``resource`` for ``ttl_s`` seconds from ``now``
    (whole seconds), signed with the first of ``keys``.

    :class:`Unprocessable` names the bad argument (``resource``, ``actions``, ``ttl_s``,
    ``subject``); :class:`Conflict` when no key is configured.
    """
    if not keys:
        raise Conflict(
            "no capability keys are configured: set auth.capability_keys "
            '(e.g. [[auth.capability_keys]] id = "k1", secret = {env = "NOA_CAP_KEY"})',
            code="capability_keys_missing",
        )
    _check_text(resource, "resource", _MAX_RESOURCE_LENGTH)
    checked = validate_scopes(actions, param="actions")
    if subject is not None:
        _check_text(subject, "subject", _MAX_SUBJECT_LENGTH)
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not 0 < ttl_s <= max_ttl_s:
        raise Unprocessable(
            f"ttl_s must be 1 to {max_ttl_s} seconds (auth.capability_max_ttl_s)", param="ttl_s"
        )
    key = keys[0]
    issued = int(time.time() if now is None else now)
    claims = CapabilityClaims(
        kid=key.id,
        jti=secrets.token_urlsafe(12),
        res=resource,
        act=list(checked),
        iat=issued,
        exp=issued + ttl_s,
        sub=subject,
    )
    signed = TOKEN_PREFIX + _b64encode(msgspec.json.encode(claims))
    return f"{signed}.{_b64encode(_sign(key, signed))}"


def verify(
    keys: Sequence[CapabilityKey],
    token: str,
    *,
    max_ttl_s: int,
    leeway_s: float = DEFAULT_LEEWAY_S,
    now: float | None = None,
) -> CapabilityClaims:
    """The claims of a genuine, current token; :class:`Unauthorized` for anything else."""
    if len(token) > _MAX_TOKEN_LENGTH or not token.isascii() or not token.startswith(TOKEN_PREFIX):
        raise Unauthorized("capability token malformed", code="invalid_capability")
    signed, dot, signature = token.rpartition(".")
    payload = signed[len(TOKEN_PREFIX) :]
    if not dot or len(signed) <= len(TOKEN_PREFIX) or "." in payload:
        raise Unauthorized("capability token malformed", code="invalid_capability")
    try:
        claims = _decode_claims(_b64decode(payload))
        given = _b64decode(signature)
    except (ValueError, binascii.Error, msgspec.DecodeError):
        # msgspec.ValidationError is a DecodeError: a missing or mistyped field too.
        raise Unauthorized("capability token malformed", code="invalid_capability") from None
    key = next((k for k in keys if k.id == claims.kid), None)
    if key is None:
        raise Unauthorized("capability token signed by an unknown key", code="invalid_capability")
    if not hmac.compare_digest(_sign(key, signed), given):
        raise Unauthorized("capability token signature invalid", code="invalid_capability")
    # Only now, the signature checked, do the claims' values mean anything.
    moment = time.time() if now is None else now
    if claims.exp <= claims.iat or claims.exp - claims.iat > max_ttl_s:
        raise Unauthorized(
            "capability token lifetime exceeds auth.capability_max_ttl_s",
            code="invalid_capability",
        )
    if claims.iat > moment + leeway_s:
        raise Unauthorized("capability token issued in the future", code="invalid_capability")
    if claims.exp + leeway_s <= moment:
        raise Unauthorized("capability token expired", code="capability_expired")
    return claims


class CapabilityScheme:
    """The ``capability`` auth scheme: ``Authorization: Bearer noacap1....``. The
    principal it gives may act on the token's one resource only."""

    name = "capability"

    def __init__(self, config: AuthConfig, *, leeway_s: float = DEFAULT_LEEWAY_S) -> None:
        self._keys = config.capability_keys
        self._max_ttl_s = config.capability_max_ttl_s
        self._leeway_s = leeway_s

    def recognises(self, credential: str) -> bool:
        return credential.startswith(TOKEN_PREFIX)

    async def start(self, host: Any) -> None:
        try:
            check_keys(self._keys)
        except ValueError as exc:
            sources = host.effective_config().get("sources", {})
            layer = sources.get("auth.capability_keys", "built-in default")
            raise ConfigError("auth.capability_keys", MASK, layer, str(exc)) from None

    async def close(self) -> None:
        return None

    async def authenticate(self, credential: str) -> Principal:
        claims = verify(self._keys, credential, max_ttl_s=self._max_ttl_s, leeway_s=self._leeway_s)
        return Principal(
            subject=f"cap:{claims.jti}",
            scheme=self.name,
            scopes=frozenset(claims.act),
            resource=claims.res,
        )
