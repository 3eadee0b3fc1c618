"""The jwt scheme on real components: keys from PEM files, secrets and a JWKS served over
HTTP by this test; the attack catalogue; the verified-token cache; revocation kept in the
tiered cache (memory, Redis, SQLite) and seen by every worker."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from noa.builtin_plugins.auth.config import AuthConfig, JwtKey
from noa.builtin_plugins.auth.jwt_scheme import JwtScheme
from noa.builtin_plugins.auth.revocation import RevocationList
from noa.builtin_plugins.cache.durable import DurableTier
from noa.builtin_plugins.cache.redis_driver import RedisCache
from noa.builtin_plugins.cache.tiered import TieredCache
from noa.builtin_plugins.storage.config import StorageConfig
from noa.builtin_plugins.storage.migrate import Migrator, make_engine
from noa.builtin_plugins.storage.sqlite_driver import SqliteDriver
from noa.plugin_sdk import Secret
from noa.plugin_sdk.auth import AuthScheme, Principal
from noa.plugin_sdk.errors import ConfigError, ServiceUnavailable, Unauthorized
from noa.plugin_sdk.memory_cache import MemoryCache
from noa.plugin_sdk.ports.cache import CACHE_STATE_KEY
from redis.asyncio import Redis

ISSUER = "https://id.example.com/"
AUDIENCE = "noa-api"
SECRET = "a-shared-secret-that-is-long-enough-for-hs256"
CACHE_APP = {"cache": "noa.builtin_plugins.cache.piccolo_app"}
REDIS_URL = "redis://127.0.0.1:6379/0"

# -- keys and tokens ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_jwk(key: Any, kid: str, alg: str | None = None, **extra: Any) -> dict[str, Any]:
    algorithm = jwt.algorithms.ECAlgorithm if isinstance(key, ec.EllipticCurvePrivateKey) else None
    to_jwk = (algorithm or jwt.algorithms.RSAAlgorithm).to_jwk
    jwk: dict[str, Any] = to_jwk(key.public_key(), as_dict=True)
    jwk.update({"kid": kid, "use": "sig", **extra})
    if alg:
        jwk["alg"] = alg
    return jwk


def claims(**override: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": now,
        "exp": now + 300,
        "scope": "inference:invoke models:read",
    }
    base.update(override)
    return {name: value for name, value in base.items() if value is not None}


def token(key: Any, alg: str = "RS256", kid: str | None = "rsa", **override: Any) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims(**override), key, algorithm=alg, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], payload: dict[str, Any], hmac_key: bytes | None) -> str:
    """A token built by hand, as an attacker would: any header, any HMAC key."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    if hmac_key is None:
        return signing_input + "."
    signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


# -- a JWKS endpoint ---------------------------------------------------------------------


class JwksServer:
    """A real HTTP server on 127.0.0.1 serving ``keys`` as a JWKS, counting requests."""

    def __init__(self) -> None:
        self.keys: list[Any] = []
        self.requests = 0
        self.status = 200
        self.delay_s = 0.0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server.requests += 1
                time.sleep(server.delay_s)
                body = json.dumps({"keys": server.keys}).encode()
                self.send_response(server.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/.well-known/jwks.json"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()


# -- workers -----------------------------------------------------------------------------


class Host:
    """What a scheme takes from the kernel at start: the shared state."""

    def __init__(self, cache: TieredCache) -> None:
        self.state: dict[str, Any] = {CACHE_STATE_KEY: cache}


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[DurableTier]:
    """The durable cache tier on a migrated SQLite file, shared by every worker."""
    data_dir = str(tmp_path / "data")
    await Migrator(make_engine("sqlite", StorageConfig(), data_dir), CACHE_APP).apply()
    storage = SqliteDriver(str(Path(data_dir) / "noa.sqlite3"))
    yield DurableTier(storage)
    await storage.close()


Start = Callable[..., Awaitable[JwtScheme]]


@pytest.fixture
async def start(database: DurableTier) -> AsyncIterator[Start]:
    """Start a scheme as one worker would: its own memory tier, the shared database."""
    started: list[JwtScheme] = []

    async def start(config: AuthConfig, shared: RedisCache | None = None) -> JwtScheme:
        scheme = JwtScheme(config)
        cache = TieredCache(MemoryCache(1000), shared, durable=database, default_ttl_s=60)
        await scheme.start(Host(cache))
        started.append(scheme)
        return scheme

    yield start
    for scheme in started:
        await scheme.close()


@pytest.fixture
def pem_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> str:
    path = tmp_path / "issuer.pem"
    path.write_bytes(public_pem(rsa_key))
    return str(path)


def config(*keys: JwtKey, **settings: Any) -> AuthConfig:
    return AuthConfig(jwt_keys=keys, jwt_issuer=ISSUER, jwt_audience=AUDIENCE, **settings)


def static_keys(pem_file: str) -> tuple[JwtKey, ...]:
    return (
        JwtKey(kid="rsa", algorithms=("RS256",), public_key_file=pem_file),
        JwtKey(kid="hs", algorithms=("HS256",), secret=Secret(SECRET)),
    )


@pytest.fixture
async def scheme(start: Start, pem_file: str) -> JwtScheme:
    return await start(config(*static_keys(pem_file), revocation_check_s=0.2))


# -- positives ---------------------------------------------------------------------------


async def test_rs256_from_a_pem_file(scheme: JwtScheme, rsa_key: rsa.RSAPrivateKey) -> None:
    assert isinstance(scheme, AuthScheme)
    credential = token(rsa_key)
    assert scheme.recognises(credential)
    principal = await scheme.authenticate(credential)
    assert principal == Principal(
        subject=f"jwt:{ISSUER}#alice",
        scheme="jwt",
        scopes=frozenset({"inference:invoke", "models:read"}),
    )


async def test_hs256_from_a_secret(scheme: JwtScheme) -> None:
    principal = await scheme.authenticate(token(SECRET, "HS256", "hs", sub="svc-7"))
    assert principal.subject == f"jwt:{ISSUER}#svc-7"


async def test_a_key_without_kid_serves_tokens_without_kid(
    start: Start, pem_file: str, rsa_key: rsa.RSAPrivateKey
) -> None:
    scheme = await start(config(JwtKey(algorithms=("RS256", "PS256"), public_key_file=pem_file)))
    assert (await scheme.authenticate(token(rsa_key, "PS256", None))).subject.endswith("#alice")
    with pytest.raises(Unauthorized, match=r"^unknown key id$"):
        await scheme.authenticate(token(rsa_key, "RS256", "rsa"))


async def test_scopes_as_a_string_a_list_or_neither(
    scheme: JwtScheme, rsa_key: rsa.RSAPrivateKey
) -> None:
    as_list = await scheme.authenticate(token(rsa_key, scope=["a:read", "b:*"]))
    assert as_list.scopes == {"a:read", "b:*"}
    for odd in ({"a": "read"}, ["a:read", 7], 42, None):
        assert (await scheme.authenticate(token(rsa_key, scope=odd))).scopes == frozenset()


async def test_the_scope_claim_is_configurable(
    start: Start, pem_file: str, rsa_key: rsa.RSAPrivateKey
) -> None:
    scheme = await start(config(*static_keys(pem_file), jwt_scope_claim="scp"))
    principal = await scheme.authenticate(token(rsa_key, scp="models:read", scope="*"))
    assert principal.scopes == {"models:read"}


async def test_leeway_is_honoured_on_exp_nbf_and_iat(
    scheme: JwtScheme, rsa_key: rsa.RSAPrivateKey
) -> None:
    now = int(time.time())
    # The default leeway is 30 s of clock skew.
    await scheme.authenticate(token(rsa_key, exp=now - 20))
    await scheme.authenticate(token(rsa_key, nbf=now + 20))
    await scheme.authenticate(token(rsa_key, iat=now + 20))
    with pytest.raises(Unauthorized, match=r"^token expired$"):
        await scheme.authenticate(token(rsa_key, exp=now - 40))


async def test_an_audience_list_holding_ours_is_accepted(
    scheme: JwtScheme, rsa_key: rsa.RSAPrivateKey
) -> None:
    await scheme.authenticate(token(rsa_key, aud=["other", AUDIENCE]))
    with pytest.raises(Unauthorized, match="audience"):
        await scheme.authenticate(token(rsa_key, aud=[f"{AUDIENCE}x", "other"]))


# -- the attack catalogue ----------------------------------------------------------------


async def test_the_attack_catalogue(
    scheme: JwtScheme,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
) -> None:
    now = int(time.time())
    valid = token(rsa_key)
    attacks = {
        "alg none": (
            forged({"alg": "none", "kid": "rsa"}, claims(), None),
            "algorithm not allowed",
        ),
        "alg none, no kid": (forged({"alg": "none"}, claims(), None), "no kid"),
        "HS256 keyed with the RS256 public key": (
            forged({"alg": "HS256", "kid": "rsa"}, claims(), public_pem(rsa_key)),
            "algorithm not allowed",
        ),
        "RS256 token against the HS256 key": (
            token(rsa_key, "RS256", "hs"),
            "algorithm not allowed",
        ),
        "expired": (token(rsa_key, exp=now - 3600), "^token expired$"),
        "nbf in the future": (token(rsa_key, nbf=now + 3600), r"not yet valid \(nbf\)"),
        "iat in the future": (token(rsa_key, iat=now + 3600), r"issued in the future \(iat\)"),
        "wrong audience": (token(rsa_key, aud="someone-else"), r"wrong audience"),
        "no audience": (token(rsa_key, aud=None), "token has no aud claim"),
        "wrong issuer": (token(rsa_key, iss="https://id.example.com"), "wrong issuer"),
        "no issuer": (token(rsa_key, iss=None), "token has no iss claim"),
        "no exp": (token(rsa_key, exp=None), "token has no exp claim"),
        "no sub": (token(rsa_key, sub=None), "^token has no sub$"),
        "sub not a string": (token(rsa_key, sub=42), "malformed"),
        "unknown kid": (token(rsa_key, kid="nobody"), "^unknown key id$"),
        "kid not a string": (forged({"alg": "RS256", "kid": 7}, claims(), None), "malformed"),
        "another key's signature": (token(other_rsa_key), "bad signature"),
        "the HS secret's neighbour": (token(SECRET + "x", "HS256", "hs"), "bad signature"),
        "truncated": (valid[:-12], "bad signature|malformed"),
        "signature dropped": (valid.rsplit(".", 1)[0] + ".", "bad signature|malformed"),
        "payload swapped": (
            ".".join(
                [
                    valid.split(".")[0],
                    b64(json.dumps(claims(sub="root")).encode()),
                    valid.split(".")[2],
                ]
            ),
            "bad signature",
        ),
        "garbage": ("eyJ.garbage.here", "malformed"),
        "header not an object": (f"{b64(b'[1]')}.{b64(b'{}')}.sig", "malformed"),
        "too long": ("eyJ" + "A" * 20_000 + ".a.b", "too long"),
    }
    for name, (credential, message) in attacks.items():
        with pytest.raises(Unauthorized, match=message) as caught:
            await scheme.authenticate(credential)
        assert caught.value.status_code == 401, name


async def test_a_revoked_jti_is_refused_also_when_remembered(
    scheme: JwtScheme, rsa_key: rsa.RSAPrivateKey
) -> None:
    jti = uuid.uuid4().hex
    credential = token(rsa_key, jti=jti)
    first = await scheme.authenticate(credential)
    assert await scheme.authenticate(credential) is first  # remembered, not verified again
    await scheme.revocations.revoke(jti, time.time() + 300)
    with pytest.raises(Unauthorized, match=r"^token revoked$") as caught:
        await scheme.authenticate(credential)
    assert caught.value.code == "token_revoked"
    # Another token of the same subject is not affected.
    await scheme.authenticate(token(rsa_key, jti=uuid.uuid4().hex))


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
async def test_any_eyj_text_is_either_valid_or_unauthorized(
    scheme: JwtScheme, rsa_key: rsa.RSAPrivateKey, data: st.DataObject
) -> None:
    valid = token(rsa_key)
    b64_text = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")
    credential = data.draw(
        st.one_of(
            st.text().map(lambda tail: "eyJ" + tail),
            st.tuples(b64_text, b64_text, b64_text).map(lambda parts: "eyJ" + ".".join(parts)),
            st.integers(0, len(valid)).map(lambda cut: valid[:cut]),
            st.tuples(st.integers(0, len(valid) - 1), st.characters()).map(
                lambda edit: valid[: edit[0]] + edit[1] + valid[edit[0] + 1 :]
            ),
        )
    )
    try:
        principal = await scheme.authenticate(credential)
    except Unauthorized:
        return
    assert principal.subject == f"jwt:{ISSUER}#alice"


# -- the verified-token cache ------------------------------------------------------------


async def test_remembered_tokens_are_bounded_oldest_first(
    start: Start, pem_file: str, rsa_key: rsa.RSAPrivateKey
) -> None:
    scheme = await start(config(*static_keys(pem_file), token_cache_entries=2))
    one, two, three = (token(rsa_key, sub=name) for name in ("one", "two", "three"))
    first = await scheme.authenticate(one)
    await scheme.authenticate(two)
    assert await scheme.authenticate(one) is first
    await scheme.authenticate(three)  # evicts "one", the oldest
    assert await scheme.authenticate(one) is not first


async def test_a_token_is_remembered_until_its_exp_not_beyond(
    scheme: JwtScheme, rsa_key: rsa.RSAPrivateKey
) -> None:
    # Past its exp but within the leeway: valid, but not remembered.
    late = token(rsa_key, exp=int(time.time()) - 5)
    assert await scheme.authenticate(late) is not await scheme.authenticate(late)


async def test_a_zero_sized_cache_verifies_every_time(
    start: Start, pem_file: str, rsa_key: rsa.RSAPrivateKey
) -> None:
    scheme = await start(config(*static_keys(pem_file), token_cache_entries=0))
    credential = token(rsa_key)
    assert await scheme.authenticate(credential) is not await scheme.authenticate(credential)


# -- JWKS --------------------------------------------------------------------------------


def jwks_config(url: str, **settings: Any) -> AuthConfig:
    settings.setdefault("jwks_cooldown_s", 0.2)
    return config(JwtKey(algorithms=("ES256", "RS256"), jwks_url=url), **settings)


async def test_es256_from_a_jwks(start: Start, jwks_server: JwksServer) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwks_server.keys = [public_jwk(key, "ec-1")]
    scheme = await start(jwks_config(jwks_server.url))
    principal = await scheme.authenticate(token(key, "ES256", "ec-1", scope="models:read"))
    assert principal.scopes == {"models:read"}
    # The key's type pins it to ES256 even though the config also allows RS256.
    forged_rs = forged({"alg": "RS256", "kid": "ec-1"}, claims(), None)
    with pytest.raises(Unauthorized, match="algorithm not allowed"):
        await scheme.authenticate(forged_rs)


async def test_kid_rotation_through_the_jwks(start: Start, jwks_server: JwksServer) -> None:
    old, new = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    jwks_server.keys = [public_jwk(old, "2025")]
    scheme = await start(jwks_config(jwks_server.url))
    old_token = token(old, "ES256", "2025")
    await scheme.authenticate(old_token)

    jwks_server.keys = [public_jwk(new, "2026")]  # the provider rotates; "2025" is gone
    await asyncio.sleep(0.25)  # past the cooldown
    await scheme.authenticate(token(new, "ES256", "2026"))
    assert jwks_server.requests == 2
    # The old key left the set: a token remembered with it is verified again, and fails.
    with pytest.raises(Unauthorized, match=r"^unknown key id$"):
        await scheme.authenticate(old_token)


async def test_unknown_kids_fetch_at_most_once_per_cooldown(
    start: Start, jwks_server: JwksServer
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwks_server.keys = [public_jwk(key, "real")]
    jwks_server.delay_s = 0.05  # concurrent callers arrive while the fetch runs
    scheme = await start(jwks_config(jwks_server.url, jwks_cooldown_s=0.5))
    assert jwks_server.requests == 1
    await asyncio.sleep(0.55)

    async def attempt(kid: str) -> BaseException | Principal:
        try:
            return await scheme.authenticate(token(key, "ES256", kid))
        except Exception as exc:
            return exc

    results = await asyncio.gather(*(attempt(f"made-up-{i}") for i in range(50)))
    assert all(isinstance(r, Unauthorized) and r.message == "unknown key id" for r in results)
    assert jwks_server.requests == 2
    results = await asyncio.gather(*(attempt(f"more-{i}") for i in range(50)))
    assert all(isinstance(r, Unauthorized) for r in results)
    assert jwks_server.requests == 2  # still within the cooldown
    await scheme.authenticate(token(key, "ES256", "real"))


async def test_a_failed_fetch_keeps_the_last_good_set(
    start: Start, jwks_server: JwksServer, caplog: pytest.LogCaptureFixture
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwks_server.keys = [public_jwk(key, "k1")]
    scheme = await start(jwks_config(jwks_server.url))
    jwks_server.status = 500
    await asyncio.sleep(0.25)
    with (
        caplog.at_level(logging.WARNING, "noa.auth"),
        pytest.raises(Unauthorized, match=r"^unknown key id$"),
    ):
        await scheme.authenticate(token(key, "ES256", "k2"))
    assert "fetch failed (HTTPStatusError" in caplog.text
    assert jwks_server.requests == 2
    await scheme.authenticate(token(key, "ES256", "k1"))


async def test_the_set_is_refreshed_in_the_background_when_old(
    start: Start, jwks_server: JwksServer
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwks_server.keys = [public_jwk(key, "k1")]
    scheme = await start(jwks_config(jwks_server.url, jwks_refresh_s=0.2, jwks_cooldown_s=0.1))
    await asyncio.sleep(0.25)
    await scheme.authenticate(token(key, "ES256", "k1"))  # served from the old set ...
    for _ in range(100):  # ... while it is fetched again
        if jwks_server.requests == 2:
            break
        await asyncio.sleep(0.01)
    assert jwks_server.requests == 2


async def test_an_unreachable_jwks_fails_closed(start: Start) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/jwks"
    scheme = await start(jwks_config(url, jwks_timeout_s=0.5))
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ServiceUnavailable, match="key set cannot be fetched"):
        await scheme.authenticate(token(key, "ES256", "k1"))


async def test_unusable_jwks_keys_are_skipped_and_logged(
    start: Start, jwks_server: JwksServer, caplog: pytest.LogCaptureFixture
) -> None:
    good = ec.generate_private_key(ec.SECP256R1())
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    p384 = ec.generate_private_key(ec.SECP384R1())
    jwks_server.keys = [
        public_jwk(good, "enc", use="enc"),
        {k: v for k, v in public_jwk(good, "x").items() if k != "kid"},
        public_jwk(weak, "weak"),
        public_jwk(p384, "p384"),
        public_jwk(good, "ps", alg="PS256"),
        {"kty": "oct", "kid": "secret", "k": b64(b"0" * 32)},
        {"kty": "nonsense", "kid": "odd"},
        "not an object",
        public_jwk(good, "good"),
    ]
    with caplog.at_level(logging.WARNING, "noa.auth"):
        scheme = await start(jwks_config(jwks_server.url))
    for kid in ("enc", "weak", "p384", "ps", "secret", "odd"):
        assert f"skipping key {kid!r}" in caplog.text
        with pytest.raises(Unauthorized, match="unknown key id"):
            await scheme.authenticate(token(good, "ES256", kid))
    assert "skipping key None: no kid" in caplog.text
    await scheme.authenticate(token(good, "ES256", "good"))


# -- revocation across workers -----------------------------------------------------------


async def test_a_revocation_survives_a_restart_without_redis(
    start: Start, pem_file: str, rsa_key: rsa.RSAPrivateKey
) -> None:
    jti = uuid.uuid4().hex
    credential = token(rsa_key, jti=jti)
    first = await start(config(*static_keys(pem_file)))
    await first.revocations.revoke(jti, time.time() + 300)
    restarted = await start(config(*static_keys(pem_file)))  # empty memory, same database
    with pytest.raises(Unauthorized, match="revoked"):
        await restarted.authenticate(credential)


class CountingCache(TieredCache):
    """The tiered cache, counting reads."""

    reads = 0

    async def get(self, key: str, *, durable: bool = False) -> bytes | None:
        self.reads += 1
        return await super().get(key, durable=durable)


async def test_the_revocation_list_reads_once_per_interval(database: DurableTier) -> None:
    cache = CountingCache(MemoryCache(100), durable=database)
    revocations = RevocationList(cache, check_interval_s=0.2, max_entries=2)
    results = await asyncio.gather(*(revocations.is_revoked("j1") for _ in range(20)))
    assert results == [False] * 20
    assert cache.reads == 1  # concurrent checks share one read, later ones the answer
    assert not await revocations.is_revoked("j1")
    assert cache.reads == 1
    await asyncio.sleep(0.21)
    assert not await revocations.is_revoked("j1")
    assert cache.reads == 2
    for jti in ("j2", "j3", "j4"):
        await revocations.is_revoked(jti)
    assert len(revocations) == 2  # bounded
    await revocations.revoke("gone", time.time() - 60)  # already expired: nothing stored
    assert await database.get("auth:revoked:gone") is None


async def test_the_revocation_list_fails_closed(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "data")
    await Migrator(make_engine("sqlite", StorageConfig(), data_dir), CACHE_APP).apply()
    storage = SqliteDriver(str(Path(data_dir) / "noa.sqlite3"))
    cache = TieredCache(MemoryCache(100), durable=DurableTier(storage))
    revocations = RevocationList(cache, check_interval_s=0.2)
    await storage.close()  # the database goes away
    with pytest.raises(ServiceUnavailable, match="revocation list cannot be read"):
        await revocations.is_revoked("j1")
    with pytest.raises(ServiceUnavailable, match="revocation list cannot be written"):
        await revocations.revoke("j1", time.time() + 60)


@pytest.mark.redis
async def test_two_workers_on_redis_see_a_revocation_within_the_interval(
    start: Start, pem_file: str, rsa_key: rsa.RSAPrivateKey
) -> None:
    prefix = f"test:jwt:{uuid.uuid4().hex}:"
    interval = 0.3
    shared = [RedisCache(REDIS_URL, prefix=prefix) for _ in range(2)]
    client = Redis.from_url(REDIS_URL)
    try:
        workers = [
            await start(config(*static_keys(pem_file), revocation_check_s=interval), redis)
            for redis in shared
        ]
        jti = uuid.uuid4().hex
        credential = token(rsa_key, jti=jti)
        for worker in workers:
            await worker.authenticate(credential)  # each remembers "not revoked"
        await workers[0].revocations.revoke(jti, time.time() + 300)
        revoked_at = time.monotonic()
        with pytest.raises(Unauthorized, match="revoked"):
            await workers[0].authenticate(credential)
        refused: Unauthorized | None = None
        while refused is None:
            assert time.monotonic() - revoked_at < interval + 0.2
            try:
                await workers[1].authenticate(credential)
            except Unauthorized as exc:
                refused = exc
            await asyncio.sleep(0.02)
        assert refused.message == "token revoked"
        # Redis holds it, with a ttl until the token's exp plus the leeway.
        assert 250_000 < await client.pttl(f"{prefix}auth:revoked:{jti}") <= 331_000
    finally:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.unlink(*keys)
        await client.aclose()
        for redis in shared:
            await redis.close()


# -- config and start --------------------------------------------------------------------


def test_a_deployment_with_keys_pins_issuer_and_audience() -> None:
    key = JwtKey(kid="hs", algorithms=("HS256",), secret=Secret(SECRET))
    with pytest.raises(ConfigError, match=r"auth.jwt_issuer"):
        JwtScheme(AuthConfig(jwt_keys=(key,), jwt_audience=AUDIENCE))
    with pytest.raises(ConfigError, match=r"auth.jwt_audience"):
        JwtScheme(AuthConfig(jwt_keys=(key,), jwt_issuer=ISSUER))
    JwtScheme(AuthConfig())  # no keys: nothing to pin


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (JwtKey(algorithms=("HS256",)), "exactly one of"),
        (
            JwtKey(algorithms=("HS256",), secret=Secret(SECRET), jwks_url="https://x/"),
            "exactly one of",
        ),
        (JwtKey(algorithms=("none",), secret=Secret(SECRET)), "not a signature algorithm"),
        (JwtKey(algorithms=(), secret=Secret(SECRET)), "at least one"),
        (JwtKey(algorithms=("HS256", "RS256"), secret=Secret(SECRET)), "HS256/HS384/HS512 only"),
        (JwtKey(algorithms=("RS256", "HS256"), jwks_url="https://x/"), "need a secret"),
        (JwtKey(algorithms=("HS256",), secret=Secret("short")), "below the minimum"),
        (
            JwtKey(
                algorithms=("HS256",),
                secret=Secret("-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----"),
            ),
            "asymmetric key",
        ),
        (JwtKey(kid="k", algorithms=("RS256",), jwks_url="https://x/"), "leave kid empty"),
        (JwtKey(algorithms=("RS256",), jwks_url="http://id.example.com/jwks"), "use https"),
    ],
)
def test_bad_keys_are_refused_with_the_fix(key: JwtKey, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        JwtScheme(config(key))


def test_two_keys_with_one_kid_are_refused() -> None:
    key = JwtKey(kid="k", algorithms=("HS256",), secret=Secret(SECRET))
    with pytest.raises(ConfigError, match="another key has this kid"):
        JwtScheme(config(key, key))


async def test_a_key_file_that_cannot_verify_is_refused_at_start(
    start: Start, tmp_path: Path
) -> None:
    ec_file = tmp_path / "ec.pem"
    ec_file.write_bytes(public_pem(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(ConfigError, match="cannot verify every algorithm"):
        await start(config(JwtKey(algorithms=("RS256",), public_key_file=str(ec_file))))
    with pytest.raises(ConfigError, match="cannot read it"):
        await start(config(JwtKey(algorithms=("RS256",), public_key_file=str(tmp_path / "none"))))
    ec_file.write_bytes(b"not a key")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        await start(config(JwtKey(algorithms=("ES256",), public_key_file=str(ec_file))))


async def test_start_needs_durable_cache_entries(pem_file: str) -> None:
    scheme = JwtScheme(config(*static_keys(pem_file)))
    with pytest.raises(RuntimeError, match=r"enable 'storage', then run `noa migrate apply`"):
        await scheme.start(Host(TieredCache(MemoryCache(10))))
    with pytest.raises(RuntimeError, match="enable 'cache'"):
        await scheme.start(type("Bare", (), {"state": {}})())


async def test_without_keys_jwts_are_refused(start: Start, rsa_key: rsa.RSAPrivateKey) -> None:
    scheme = await start(AuthConfig())
    with pytest.raises(Unauthorized, match="no \\[auth\\] jwt_keys"):
        await scheme.authenticate(token(rsa_key))
    assert not scheme.recognises("noa_sk_abc")
    assert not scheme.recognises("eyJhbGciOi.only-two")
