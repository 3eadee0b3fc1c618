"""API keys: the ``noa_sk_<id>_<secret>`` credential, its table and its auth scheme.

``id`` is 12 lowercase hex characters: public, it names the key in lists, logs and
rate-limit subjects. ``secret`` is 32 random bytes, url-safe base64. The table
``noa_auth_api_key`` keeps only the SHA-256 of the whole key (keys are high-entropy, so a
plain hash is enough); the key itself is shown once, when it is created.

:class:`ApiKeyScheme` reads a key's record through a small per-worker cache that keeps
each record at most ``auth.api_key_cache_s`` seconds, so a revocation reaches every
worker within that delay.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
from noa.builtin_plugins.auth.config import AuthConfig
from noa.plugin_sdk.auth import Principal, RateLimit
from noa.plugin_sdk.errors import (
    ApiError,
    Conflict,
    ServiceUnavailable,
    Unauthorized,
    Unprocessable,
)
from noa.plugin_sdk.ports.storage import STORAGE_STATE_KEY, SqlRunner

__all__ = [
    "ID_PATTERN",
    "KEY_PREFIX",
    "MAX_SCOPES",
    "ApiKeyRecord",
    "ApiKeyScheme",
    "ApiKeyStore",
    "CreatedApiKey",
    "hash_key",
    "parse_key",
    "validate_scopes",
]

KEY_PREFIX = "noa_sk_"
ID_PATTERN = re.compile(r"[0-9a-f]{12}")
# token_urlsafe(32) gives 43 characters; longer secrets are accepted for the future.
_SECRET_PATTERN = re.compile(r"[A-Za-z0-9_-]{43,128}")
_MAX_KEY_LENGTH = len(KEY_PREFIX) + 12 + 1 + 128
# "*", "area:*" or "area:action".
_SCOPE = re.compile(r"(\*|[A-Za-z0-9][A-Za-z0-9_.-]*:(\*|[A-Za-z0-9][A-Za-z0-9_.-]*))")
MAX_SCOPES = 64
_MAX_SCOPE_LENGTH = 100
_MAX_NAME_LENGTH = 200
# Records a worker remembers; the oldest go first.
_CACHE_ENTRIES = 10_000

_COLUMNS = (
    "id, name, key_hash, scopes, created_at, expires_at, revoked_at, "
    "rate_per_s, rate_burst, quota_per_day, created_by"
)


class ApiKeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An API key as listed: everything but the key and its hash. Times are seconds
    since the epoch."""

    id: str
    name: str
    scopes: tuple[str, ...]
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    rate_limit: RateLimit | None = None
    quota_per_day: int | None = None
    created_by: str = ""

    def status(self, now: float | None = None) -> str:
        """``active``, ``revoked`` or ``expired``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (time.time() if now is None else now):
            return "expired"
        return "active"


class CreatedApiKey(ApiKeyRecord, frozen=True, kw_only=True):
    """A new key's record and the key itself, which is never shown again."""

    key: str


def hash_key(key: str) -> str:
    """The stored form of a key: the hex SHA-256 of the whole key."""
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def parse_key(credential: str) -> str:
    """The id of a well-formed key; :class:`Unauthorized` for anything else."""
    if (
        len(credential) > _MAX_KEY_LENGTH
        or not credential.isascii()
        or not credential.startswith(KEY_PREFIX)
    ):
        raise Unauthorized("API key malformed", code="invalid_api_key")
    rest = credential[len(KEY_PREFIX) :]
    key_id, sep, secret = rest[:12], rest[12:13], rest[13:]
    if sep != "_" or not ID_PATTERN.fullmatch(key_id) or not _SECRET_PATTERN.fullmatch(secret):
        raise Unauthorized("API key malformed", code="invalid_api_key")
    return key_id


def validate_scopes(scopes: Iterable[str], param: str = "scopes") -> tuple[str, ...]:
    """The scopes, deduplicated in order; :class:`Unprocessable` naming ``param`` if one is
    not ``*``, ``area:*`` or ``area:action``, or if there are none or too many."""
    result: dict[str, None] = {}
    for scope in scopes:
        if (
            not isinstance(scope, str)
            or len(scope) > _MAX_SCOPE_LENGTH
            or not _SCOPE.fullmatch(scope)
        ):
            raise Unprocessable(
                f"invalid scope {scope!r}: expected '*', 'area:*' or 'area:action'", param=param
            )
        result[scope] = None
    if not result:
        raise Unprocessable("at least one scope is needed", param=param)
    if len(result) > MAX_SCOPES:
        raise Unprocessable(f"at most {MAX_SCOPES} scopes", param=param)
    return tuple(result)


def _check_label(value: str, param: str, max_length: int = _MAX_NAME_LENGTH) -> str:
    if not value or len(value) > max_length or not value.isprintable():
        raise Unprocessable(f"{param} must be 1 to {max_length} printable characters", param=param)
    return value


def _record(row: dict[str, Any]) -> ApiKeyRecord:
    scopes = row["scopes"]
    per_s, burst = row["rate_per_s"], row["rate_burst"]
    return ApiKeyRecord(
        id=row["id"],
        name=row["name"],
        scopes=tuple(json.loads(scopes) if isinstance(scopes, str) else scopes),
        created_at=float(row["created_at"]),
        expires_at=None if row["expires_at"] is None else float(row["expires_at"]),
        revoked_at=None if row["revoked_at"] is None else float(row["revoked_at"]),
        rate_limit=None
        if per_s is None or burst is None
        else RateLimit(per_s=float(per_s), burst=int(burst)),
        quota_per_day=None if row["quota_per_day"] is None else int(row["quota_per_day"]),
        created_by=row["created_by"],
    )


class ApiKeyStore:
    """The ``noa_auth_api_key`` table, through the storage port (SQLite or PostgreSQL)."""

    __slots__ = ("_db",)

    def __init__(self, storage: SqlRunner) -> None:
        self._db = storage

    async def create(
        self,
        name: str,
        scopes: Iterable[str],
        *,
        expires_at: float | None = None,
        rate_limit: RateLimit | None = None,
        quota_per_day: int | None = None,
        created_by: str,
    ) -> CreatedApiKey:
        """Store a new key; its record and the plaintext key (shown once: only its hash
        is kept). Invalid input raises :class:`Unprocessable` naming the field."""
        _check_label(name, "name")
        checked = validate_scopes(scopes)
        now = time.time()
        if expires_at is not None and expires_at <= now:
            raise Unprocessable("expires_at must be in the future", param="expires_at")
        if rate_limit is not None and not (rate_limit.per_s > 0 and rate_limit.burst >= 1):
            raise Unprocessable("rate_limit needs per_s > 0 and burst >= 1", param="rate_limit")
        if quota_per_day is not None and quota_per_day < 1:
            raise Unprocessable("quota_per_day must be at least 1", param="quota_per_day")
        created_by = created_by[:_MAX_NAME_LENGTH]
        for _ in range(3):  # 48-bit ids: a collision is rare, and retried
            key_id = secrets.token_hex(6)
            key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
            try:
                await self._db.execute(
                    f"INSERT INTO noa_auth_api_key ({_COLUMNS}) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    key_id,
                    name,
                    hash_key(key),
                    json.dumps(list(checked)),
                    now,
                    None if expires_at is None else float(expires_at),
                    None,
                    None if rate_limit is None else float(rate_limit.per_s),
                    None if rate_limit is None else rate_limit.burst,
                    quota_per_day,
                    created_by,
                )
            except Conflict:
                continue
            return CreatedApiKey(
                id=key_id,
                name=name,
                scopes=checked,
                created_at=now,
                expires_at=expires_at,
                rate_limit=rate_limit,
                quota_per_day=quota_per_day,
                created_by=created_by,
                key=key,
            )
        raise ServiceUnavailable("could not allocate a free API key id; retry")

    async def list(self) -> list[ApiKeyRecord]:
        """Every key, oldest first (revoked and expired ones too)."""
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM noa_auth_api_key ORDER BY created_at, id"
        )
        return [_record(row) for row in rows]

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        found = await self.lookup(key_id)
        return None if found is None else found[0]

    async def lookup(self, key_id: str) -> tuple[ApiKeyRecord, str] | None:
        """The record and the stored hash of key ``key_id``, or ``None``."""
        row = await self._db.fetch_one(
            f"SELECT {_COLUMNS} FROM noa_auth_api_key WHERE id = $1", key_id
        )
        return None if row is None else (_record(row), row["key_hash"])

    async def revoke(self, key_id: str) -> ApiKeyRecord | None:
        """Mark the key revoked (a key revoked before keeps its first revocation time);
        its record, or ``None`` when there is no such key."""
        await self._db.execute(
            "UPDATE noa_auth_api_key SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            key_id,
            time.time(),
        )
        return await self.get(key_id)


_Entry = tuple[float, tuple[ApiKeyRecord, str] | None]


class ApiKeyScheme:
    """The ``api_key`` auth scheme: ``Authorization: Bearer noa_sk_...`` or
    ``X-API-Key: noa_sk_...``."""

    name = "api_key"

    def __init__(
        self,
        config: AuthConfig,
        *,
        clock: Callable[[], float] = time.time,
        max_entries: int = _CACHE_ENTRIES,
    ) -> None:
        self._ttl = config.api_key_cache_s
        self._clock = clock
        self._max_entries = max_entries
        self._store: ApiKeyStore | None = None
        # key id -> (monotonic time read, record and hash or None for "no such key")
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._loading: dict[str, asyncio.Future[tuple[ApiKeyRecord, str] | None]] = {}

    def recognises(self, credential: str) -> bool:
        return credential.startswith(KEY_PREFIX)

    async def start(self, host: Any) -> None:
        self._store = ApiKeyStore(host.state[STORAGE_STATE_KEY])

    async def close(self) -> None:
        self._store = None
        self._cache.clear()

    def forget(self, key_id: str) -> None:
        """Drop a key's cached record (this worker sees a revocation at once)."""
        self._cache.pop(key_id, None)

    async def authenticate(self, credential: str) -> Principal:
        key_id = parse_key(credential)
        found = await self._record(key_id)
        if found is None or not hmac.compare_digest(found[1], hash_key(credential)):
            raise Unauthorized("API key not recognised", code="invalid_api_key")
        record = found[0]
        if record.revoked_at is not None:
            raise Unauthorized("API key revoked", code="api_key_revoked")
        if record.expires_at is not None and record.expires_at <= self._clock():
            raise Unauthorized("API key expired", code="api_key_expired")
        return Principal(
            subject=f"key:{record.id}",
            scheme=self.name,
            scopes=frozenset(record.scopes),
            rate_limit=record.rate_limit,
            quota_per_day=record.quota_per_day,
        )

    async def _record(self, key_id: str) -> tuple[ApiKeyRecord, str] | None:
        entry = self._cache.get(key_id)
        if entry is not None and time.monotonic() - entry[0] < self._ttl:
            return entry[1]
        # One read per key at a time, however many requests carry it.
        pending = self._loading.get(key_id)
        if pending is None:
            pending = asyncio.ensure_future(self._load(key_id))
            self._loading[key_id] = pending
            pending.add_done_callback(lambda done: self._loaded(key_id, done))
        return await asyncio.shield(pending)

    def _loaded(self, key_id: str, done: asyncio.Future[Any]) -> None:
        self._loading.pop(key_id, None)
        if not done.cancelled():
            done.exception()  # retrieved here, so a read nobody awaits any more is not logged

    async def _load(self, key_id: str) -> tuple[ApiKeyRecord, str] | None:
        if self._store is None:
            raise ServiceUnavailable("API keys cannot be checked: the auth plugin has not started")
        read_at = time.monotonic()
        try:
            found = await self._store.lookup(key_id)
        except ApiError as exc:
            if isinstance(exc, ServiceUnavailable):
                raise
            raise self._unavailable(exc) from exc
        except Exception as exc:  # the driver's own errors: fail closed, never a 500
            raise self._unavailable(exc) from exc
        self._cache[key_id] = (read_at, found)
        self._cache.move_to_end(key_id)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
        return found

    @staticmethod
    def _unavailable(exc: BaseException) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"API keys cannot be checked: the database failed ({type(exc).__name__})",
            code="auth_unavailable",
        )
