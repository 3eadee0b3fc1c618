"""API keys on real databases (SQLite, PostgreSQL): the store, the ``api_key`` scheme,
the admin API through a real server, and ``noa keys`` through the real command."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sqlite3
import time
import types
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from noa.builtin_plugins.auth.apikeys import (
    KEY_PREFIX,
    ApiKeyScheme,
    ApiKeyStore,
    hash_key,
    parse_key,
)
from noa.builtin_plugins.auth.config import AuthConfig
from noa.builtin_plugins.storage.config import StorageConfig
from noa.builtin_plugins.storage.migrate import Migrator, make_engine
from noa.builtin_plugins.storage.postgres_driver import PostgresStorage
from noa.builtin_plugins.storage.sqlite_driver import SqliteDriver
from noa.plugin_sdk import Secret
from noa.plugin_sdk.auth import RateLimit
from noa.plugin_sdk.errors import ServiceUnavailable, Unauthorized, Unprocessable
from noa.plugin_sdk.ports.storage import STORAGE_STATE_KEY, StoragePort

POSTGRES_URL = "postgresql://127.0.0.1:5432/test"
APPS = {
    "audit": "noa.builtin_plugins.audit.piccolo_app",
    "cache": "noa.builtin_plugins.cache.piccolo_app",
    "auth": "noa.builtin_plugins.auth.piccolo_app",
}


class Database:
    """A migrated database, its storage port, and the name prefix this test's keys use
    (PostgreSQL's test database is shared: each test deletes only its own rows)."""

    def __init__(self, storage: StoragePort, tag: str) -> None:
        self.storage = storage
        self.tag = tag
        self.store = ApiKeyStore(storage)

    def name(self, label: str = "key") -> str:
        return f"{self.tag}-{label}"

    def scheme(self, cache_s: float = 1.0, **kwargs: Any) -> ApiKeyScheme:
        return ApiKeyScheme(AuthConfig(api_key_cache_s=cache_s), **kwargs)

    async def started(self, scheme: ApiKeyScheme) -> ApiKeyScheme:
        await scheme.start(types.SimpleNamespace(state={STORAGE_STATE_KEY: self.storage}))
        return scheme


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    storage: Any
    if request.param == "sqlite":
        path = str(tmp_path / "noa.sqlite3")
        config = StorageConfig(sqlite_path=path)
        await Migrator(make_engine("sqlite", config, str(tmp_path)), APPS).apply()
        storage = SqliteDriver(path)
    else:
        config = StorageConfig(postgres_url=Secret(POSTGRES_URL))
        await Migrator(make_engine("postgres", config, str(tmp_path)), APPS).apply()
        storage = PostgresStorage(POSTGRES_URL, min_size=1, max_size=2)
    await storage.start()
    tag = f"t-{uuid.uuid4().hex[:10]}"
    try:
        yield Database(storage, tag)
    finally:
        await storage.execute("DELETE FROM noa_auth_api_key WHERE name LIKE $1", f"{tag}-%")
        await storage.close()


# -- the store and the scheme --------------------------------------------------------------


async def test_a_created_key_authenticates_with_its_scopes_and_limits(db: Database) -> None:
    created = await db.store.create(
        db.name(),
        ["inference:invoke", "retrieval:*", "inference:invoke"],
        rate_limit=RateLimit(per_s=2.5, burst=5),
        quota_per_day=1000,
        created_by="key:admin",
    )
    assert re.fullmatch(r"noa_sk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", created.key)
    assert created.key.startswith(f"{KEY_PREFIX}{created.id}_")
    assert created.scopes == ("inference:invoke", "retrieval:*")
    scheme = await db.started(db.scheme())
    assert scheme.recognises(created.key)
    principal = await scheme.authenticate(created.key)
    assert principal.subject == f"key:{created.id}"
    assert principal.scheme == "api_key"
    assert principal.scopes == frozenset({"inference:invoke", "retrieval:*"})
    assert principal.rate_limit == RateLimit(per_s=2.5, burst=5)
    assert principal.quota_per_day == 1000
    assert principal.resource is None
    assert principal.allows("retrieval:search", None)
    assert not principal.allows("auth:admin", None)
    await scheme.close()


async def test_a_wrong_secret_or_an_unknown_id_is_refused(db: Database) -> None:
    created = await db.store.create(db.name(), ["*"], created_by="cli")
    scheme = await db.started(db.scheme())
    last = created.key[-1]
    wrong_secret = created.key[:-1] + ("A" if last != "A" else "B")
    unknown_id = f"{KEY_PREFIX}{'0' * 12}_{created.key.split('_', 3)[3]}"
    for credential in (wrong_secret, unknown_id):
        with pytest.raises(Unauthorized, match="API key not recognised"):
            await scheme.authenticate(credential)
    # The genuine key still works after the failures.
    assert (await scheme.authenticate(created.key)).subject == f"key:{created.id}"


MALFORMED = [
    "",
    "noa_sk_",
    "noa_sk_x_y",
    "noa_sk_0123456789ab",
    "noa_sk_0123456789ab_",
    "noa_sk_0123456789ab_short",
    "noa_sk_0123456789AB_" + "a" * 43,  # upper-case id
    "noa_sk_0123456789ab-" + "a" * 43,  # wrong separator
    "noa_sk_0123456789ab_" + "a" * 42 + "é",  # non-ASCII
    "noa_sk_0123456789ab_" + "a" * 42 + "=",  # outside the url-safe alphabet
    "noa_sk_0123456789ab_" + "a" * 42 + " ",
    "noa_sk_0123456789ab_" + "a" * 10_000,  # very long
    "noa_sk_\x00" * 10,
    "Bearer noa_sk_0123456789ab_" + "a" * 43,
]


@pytest.mark.parametrize("credential", MALFORMED)
async def test_malformed_keys_are_refused_without_a_lookup(db: Database, credential: str) -> None:
    scheme = await db.started(db.scheme())
    with pytest.raises(Unauthorized, match="API key malformed"):
        await scheme.authenticate(credential)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_parse_key_refuses_or_accepts_any_text_with_nothing_but_a_401(tail: str) -> None:
    for credential in (tail, KEY_PREFIX + tail, f"{KEY_PREFIX}0123456789ab_{tail}"):
        try:
            key_id = parse_key(credential)
        except Unauthorized:
            continue
        assert re.fullmatch(r"[0-9a-f]{12}", key_id)


async def test_a_revoked_key_is_refused_within_the_cache_time(db: Database) -> None:
    created = await db.store.create(db.name(), ["inference:invoke"], created_by="cli")
    scheme = await db.started(db.scheme(cache_s=0.2))
    await scheme.authenticate(created.key)  # now cached in this worker
    revoked = await db.store.revoke(created.key.split("_")[2])
    assert revoked is not None
    assert revoked.revoked_at is not None
    assert revoked.status() == "revoked"
    await asyncio.sleep(0.25)
    with pytest.raises(Unauthorized, match="API key revoked"):
        await scheme.authenticate(created.key)
    # Revoking again keeps the first time.
    again = await db.store.revoke(created.id)
    assert again is not None
    assert again.revoked_at == revoked.revoked_at
    assert await db.store.revoke("000000000000") is None


async def test_forget_makes_a_revocation_immediate_in_this_worker(db: Database) -> None:
    created = await db.store.create(db.name(), ["*"], created_by="cli")
    scheme = await db.started(db.scheme(cache_s=3600))
    await scheme.authenticate(created.key)
    await db.store.revoke(created.id)
    await scheme.authenticate(created.key)  # the cached record is still in force ...
    scheme.forget(created.id)
    with pytest.raises(Unauthorized, match="revoked"):  # ... until it is forgotten
        await scheme.authenticate(created.key)


async def test_an_expired_key_is_refused(db: Database) -> None:
    now = [time.time()]
    created = await db.store.create(db.name(), ["*"], expires_at=now[0] + 60, created_by="cli")
    scheme = await db.started(db.scheme(clock=lambda: now[0]))
    await scheme.authenticate(created.key)
    now[0] += 61
    with pytest.raises(Unauthorized, match="API key expired"):
        await scheme.authenticate(created.key)
    assert created.status(now[0]) == "expired"


async def test_the_database_holds_only_a_hash_and_lists_never_show_it(db: Database) -> None:
    created = await db.store.create(db.name(), ["auth:admin"], created_by="cli")
    secret = created.key.split("_", 3)[3]
    row = await db.storage.fetch_one("SELECT * FROM noa_auth_api_key WHERE id = $1", created.id)
    assert row is not None
    stored = json.dumps(row, default=str)
    assert created.key not in stored
    assert secret not in stored
    assert (
        row["key_hash"] == hashlib.sha256(created.key.encode()).hexdigest() == hash_key(created.key)
    )
    listed = [r for r in await db.store.list() if r.id == created.id]
    assert len(listed) == 1
    shown = json.dumps(msgspec.to_builtins([*listed, await db.store.get(created.id)]))
    assert "key_hash" not in shown
    assert row["key_hash"] not in shown
    assert secret not in shown
    assert await db.store.get("000000000000") is None


async def test_invalid_input_names_the_field(db: Database) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "", "scopes": ["*"]}, "name"),
        ({"name": "bad\nname", "scopes": ["*"]}, "name"),
        ({"name": db.name(), "scopes": []}, "scopes"),
        ({"name": db.name(), "scopes": ["inference invoke"]}, "scopes"),
        ({"name": db.name(), "scopes": ["a:b:c"]}, "scopes"),
        ({"name": db.name(), "scopes": ["*"], "expires_at": time.time() - 1}, "expires_at"),
        (
            {"name": db.name(), "scopes": ["*"], "rate_limit": RateLimit(per_s=0, burst=1)},
            "rate_limit",
        ),
        ({"name": db.name(), "scopes": ["*"], "quota_per_day": 0}, "quota_per_day"),
    ]
    for kwargs, param in cases:
        with pytest.raises(Unprocessable) as caught:
            await db.store.create(created_by="cli", **kwargs)
        assert caught.value.param == param, kwargs
    assert [r for r in await db.store.list() if r.name.startswith(db.tag)] == []


async def test_a_database_failure_is_503_not_401(tmp_path: Path) -> None:
    # A database without the table: every lookup fails with the driver's own error.
    storage = SqliteDriver(str(tmp_path / "empty.sqlite3"))
    scheme = ApiKeyScheme(AuthConfig())
    await scheme.start(types.SimpleNamespace(state={STORAGE_STATE_KEY: storage}))
    try:
        with pytest.raises(ServiceUnavailable, match="API keys cannot be checked"):
            await scheme.authenticate(f"{KEY_PREFIX}0123456789ab_{'a' * 43}")
    finally:
        await storage.close()
    unstarted = ApiKeyScheme(AuthConfig())
    with pytest.raises(ServiceUnavailable):
        await unstarted.authenticate(f"{KEY_PREFIX}0123456789ab_{'a' * 43}")


async def test_concurrent_requests_with_one_key_share_one_read(db: Database) -> None:
    created = await db.store.create(db.name(), ["*"], created_by="cli")
    reads: list[str] = []

    class Counting:
        def __init__(self, inner: StoragePort) -> None:
            self.inner = inner

        async def fetch_one(self, sql: str, *params: Any) -> Any:
            reads.append(sql)
            return await self.inner.fetch_one(sql, *params)

    scheme = ApiKeyScheme(AuthConfig(api_key_cache_s=60))
    await scheme.start(types.SimpleNamespace(state={STORAGE_STATE_KEY: Counting(db.storage)}))
    principals = await asyncio.gather(*(scheme.authenticate(created.key) for _ in range(20)))
    assert {p.subject for p in principals} == {f"key:{created.id}"}
    assert len(reads) == 1


# -- the admin API, through a real server --------------------------------------------------

PLUGINS = ["http", "broker", "storage", "cache", "audit", "auth"]
CAP_SECRET = "capability-secret-of-at-least-32-bytes-0123"


async def migrated(data_dir: Path) -> str:
    await Migrator(make_engine("sqlite", StorageConfig(), str(data_dir)), APPS).apply()
    return str(data_dir)


async def audit_rows(storage: Any, expected: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for _ in range(100):
        found = await storage.fetch("SELECT actor, action, resource, detail FROM noa_audit_event")
        if len(found) >= expected:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {expected} audit rows, found {found}")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_admin_api_creates_lists_shows_and_revokes_keys(
    noa_boot: Any, tmp_path: Path
) -> None:
    data_dir = await migrated(tmp_path / "data")
    config = {"server": {"data_dir": data_dir}, "auth": {"api_key_cache_s": 0.1}}
    async with noa_boot(PLUGINS, config=config) as noa:
        client = noa.client
        # A loopback caller with no credentials is the anonymous administrator here.
        response = await client.post(
            "/v1/admin/keys",
            json={
                "name": "ops",
                "scopes": ["auth:admin"],
                "expires_in_s": 3600,
                "rate_limit": {"per_s": 5, "burst": 10},
                "quota_per_day": 100,
            },
        )
        assert response.status_code == 201, response.text
        admin = response.json()
        assert admin["key"].startswith(f"noa_sk_{admin['id']}_")
        assert admin["rate_limit"] == {"per_s": 5.0, "burst": 10}
        assert admin["expires_at"] == pytest.approx(time.time() + 3600, abs=60)
        assert admin["created_by"].startswith("anonymous")

        # The new key calls the admin API as itself.
        response = await client.post(
            "/v1/admin/keys",
            json={"name": "reader", "scopes": ["inference:invoke"]},
            headers=bearer(admin["key"]),
        )
        assert response.status_code == 201, response.text
        reader = response.json()
        assert reader["created_by"] == f"key:{admin['id']}"

        response = await client.get("/v1/admin/keys", headers=bearer(admin["key"]))
        assert response.status_code == 200, response.text
        listing = response.json()
        assert listing["object"] == "list"
        assert {k["id"] for k in listing["data"]} == {admin["id"], reader["id"]}
        assert all("key" not in item for item in listing["data"])
        assert admin["key"] not in response.text and reader["key"] not in response.text
        assert "hash" not in response.text

        shown = await client.get(f"/v1/admin/keys/{reader['id']}", headers=bearer(admin["key"]))
        assert shown.status_code == 200
        assert shown.json()["scopes"] == ["inference:invoke"]
        assert "key" not in shown.json()

        # A key without auth:admin is refused the admin API.
        response = await client.get("/v1/admin/keys", headers=bearer(reader["key"]))
        assert response.status_code == 403, response.text

        for path in ("/v1/admin/keys/000000000000", "/v1/admin/keys/not-an-id"):
            missing = await client.delete(path, headers=bearer(admin["key"]))
            assert missing.status_code == 404
            assert missing.json()["error"]["param"] == "key_id"
        revoked = await client.delete(f"/v1/admin/keys/{reader['id']}")
        assert revoked.status_code == 204
        again = await client.delete(f"/v1/admin/keys/{reader['id']}")
        assert again.status_code == 204
        shown = await client.get(f"/v1/admin/keys/{reader['id']}")
        assert shown.json()["revoked_at"] is not None
        await asyncio.sleep(0.15)
        response = await client.get("/v1/admin/keys", headers=bearer(reader["key"]))
        assert response.status_code == 401
        assert "revoked" in response.json()["error"]["message"]

        rows = await audit_rows(noa.kernel.state[STORAGE_STATE_KEY], 4)
        assert admin["key"] not in json.dumps(rows) and reader["key"] not in json.dumps(rows)
    # (The policy records its refusals too: only the admin actions are looked at.)
    actions = {
        (r["action"], r["resource"], r["actor"].split(":")[0])
        for r in rows
        if r["action"].startswith("auth.key.")
    }
    assert actions == {
        ("auth.key.create", f"api_key:{admin['id']}", "anonymous"),
        ("auth.key.create", f"api_key:{reader['id']}", "key"),
        ("auth.key.revoke", f"api_key:{reader['id']}", "anonymous"),
    }


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": "x", "scopes": ["bad scope"]}, "scopes"),
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "", "scopes": ["*"]}, "name"),
        ({"name": "x", "scopes": ["*"], "expires_in_s": 0}, "expires_in_s"),
        (
            {"name": "x", "scopes": ["*"], "rate_limit": {"per_s": 0, "burst": 1}},
            "rate_limit.per_s",
        ),
        ({"name": "x", "scopes": ["*"], "quota_per_day": -1}, "quota_per_day"),
        ({"name": "x", "scopes": ["*"], "admin": True}, "admin"),
        ({"scopes": ["*"]}, "name"),
    ],
)
async def test_admin_api_input_errors_name_the_field(
    noa_boot: Any, tmp_path: Path, body: dict[str, Any], param: str
) -> None:
    data_dir = await migrated(tmp_path / "data")
    async with noa_boot(PLUGINS, config={"server": {"data_dir": data_dir}}) as noa:
        response = await noa.client.post("/v1/admin/keys", json=body)
        assert response.status_code in (400, 422), response.text
        error = response.json()["error"]
        assert error["param"] == param or param in error["message"], error
        listing = await noa.client.get("/v1/admin/keys")
        assert listing.json()["data"] == []


async def test_admin_api_mints_capabilities_that_the_server_accepts(
    noa_boot: Any, tmp_path: Path
) -> None:
    data_dir = await migrated(tmp_path / "data")
    config = {
        "server": {"data_dir": data_dir},
        "auth": {"capability_keys": [{"id": "k1", "secret": CAP_SECRET}]},
    }
    async with noa_boot(PLUGINS, config=config) as noa:
        response = await noa.client.post(
            "/v1/admin/capabilities",
            json={
                "resource": "model:demo",
                "actions": ["inference:invoke"],
                "ttl_s": 600,
                "subject": "partner-1",
            },
        )
        assert response.status_code == 201, response.text
        minted = response.json()
        assert minted["token"].startswith("noacap1.")
        assert minted["resource"] == "model:demo"
        assert minted["actions"] == ["inference:invoke"]
        assert minted["expires_at"] == pytest.approx(time.time() + 600, abs=5)
        # The token is no administrator: the admin API refuses it.
        refused = await noa.client.get("/v1/admin/keys", headers=bearer(minted["token"]))
        assert refused.status_code == 403, refused.text

        too_long = await noa.client.post(
            "/v1/admin/capabilities",
            json={"resource": "model:demo", "actions": ["inference:invoke"], "ttl_s": 10**7},
        )
        assert too_long.status_code == 422
        assert too_long.json()["error"]["param"] == "ttl_s"
        rows = await audit_rows(noa.kernel.state[STORAGE_STATE_KEY], 1)
    rows = [r for r in rows if r["action"] == "auth.capability.mint"]
    assert [r["resource"] for r in rows] == ["model:demo"]
    detail = json.loads(rows[0]["detail"])
    assert detail["jti"] == minted["jti"]
    assert detail["subject"] == "partner-1"
    assert minted["token"] not in rows[0]["detail"]


async def test_minting_without_capability_keys_says_what_to_configure(
    noa_boot: Any, tmp_path: Path
) -> None:
    data_dir = await migrated(tmp_path / "data")
    async with noa_boot(PLUGINS, config={"server": {"data_dir": data_dir}}) as noa:
        response = await noa.client.post(
            "/v1/admin/capabilities",
            json={"resource": "model:demo", "actions": ["inference:invoke"], "ttl_s": 60},
        )
    assert response.status_code == 409, response.text
    assert "auth.capability_keys" in response.json()["error"]["message"]


# -- noa keys, the real command ------------------------------------------------------------


def test_noa_keys_create_list_show_revoke(noa_cli: Any, tmp_path: Path) -> None:
    env = {"NOA_SERVER__DATA_DIR": str(tmp_path / "data")}
    applied = noa_cli("migrate", "apply", env=env)
    assert applied.returncode == 0, applied.stderr

    created = noa_cli(
        "keys", "create", "ci-bot", "--scope", "inference:invoke", "--scope", "retrieval:*",
        "--expires-in", "30d", "--rate", "10/s", "--burst", "20", "--quota-per-day", "5000",
        env=env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    key = re.search(r"noa_sk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", created.stdout)
    assert key is not None, created.stdout
    key_id = key.group(0)[7:19]
    assert "not shown again" in created.stdout
    assert created.stdout.count(key.group(0)) == 1

    listed = noa_cli("keys", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert key_id in listed.stdout and "ci-bot" in listed.stdout and "active" in listed.stdout
    assert key.group(0) not in listed.stdout
    secret = key.group(0)[20:]
    as_json = noa_cli("keys", "list", "--json", env=env)
    rows = json.loads(as_json.stdout)
    assert [(r["id"], r["rate_limit"], r["quota_per_day"]) for r in rows] == [
        (key_id, {"per_s": 10.0, "burst": 20}, 5000)
    ]
    assert secret not in as_json.stdout and "hash" not in as_json.stdout

    shown = noa_cli("keys", "show", key_id, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "inference:invoke retrieval:*" in shown.stdout and secret not in shown.stdout

    revoked = noa_cli("keys", "revoke", key_id, env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert f"revoked API key {key_id}" in revoked.stdout
    again = noa_cli("keys", "revoke", key_id, env=env)
    assert again.returncode == 0 and "already revoked" in again.stdout

    # The database holds the hash, never the key; each change is an audit row.
    with sqlite3.connect(tmp_path / "data" / "noa.sqlite3") as conn:
        dump = "\n".join(conn.iterdump())
        audited = conn.execute(
            "SELECT actor, action, resource FROM noa_audit_event ORDER BY at"
        ).fetchall()
    assert secret not in dump and hash_key(key.group(0)) in dump
    assert audited == [
        ("cli", "auth.key.create", f"api_key:{key_id}"),
        ("cli", "auth.key.revoke", f"api_key:{key_id}"),
    ]


def test_noa_keys_errors_are_one_line(noa_cli: Any, tmp_path: Path) -> None:
    env = {"NOA_SERVER__DATA_DIR": str(tmp_path / "data")}
    assert noa_cli("migrate", "apply", env=env).returncode == 0
    cases = [
        (("keys", "show", "000000000000"), "no API key '000000000000'"),
        (("keys", "revoke", "nope"), "no API key 'nope'"),
        (("keys", "create", "x", "--scope", "bad scope"), "invalid scope 'bad scope'"),
        (("keys", "create", "x", "--scope", "*", "--expires-in", "soon"), "not a duration"),
        (("keys", "create", "x", "--scope", "*", "--burst", "3"), "--burst needs --rate"),
        (("tokens", "mint", "--resource", "model:x", "--action", "a:b"), "auth.capability_keys"),
    ]
    for args, message in cases:
        result = noa_cli(*args, env=env)
        assert result.returncode in (1, 2), (args, result.stdout)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_noa_keys_without_migrations_says_to_migrate(noa_cli: Any, tmp_path: Path) -> None:
    env = {"NOA_SERVER__DATA_DIR": str(tmp_path / "data")}
    result = noa_cli("keys", "list", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("noa: error: ")
    assert "noa migrate apply" in result.stderr
    assert "Traceback" not in result.stderr
