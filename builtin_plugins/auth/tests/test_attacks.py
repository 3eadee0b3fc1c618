"""The attack catalogue, through the real HTTP app: each attempt is refused with 401 or
403 (413/400 for hostile bodies, 404/422 for hostile names) and nothing answers 5xx.

JWTs are RS256 from a PEM file (so key confusion can be tried), capability tokens are
HMAC-SHA256, API keys come from the admin API.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

PLUGINS = ["http", "observability", "broker", "storage", "cache", "audit", "auth", "inference"]
ISSUER = "https://issuer.test"
AUDIENCE = "noa"
CAP_KEY = "capability-key-0123456789abcdef0123"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "mallory",
        "iat": now,
        "exp": now + 300,
        "scope": "*",
        "jti": f"jti-{time.monotonic_ns()}",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def signed(key: rsa.RSAPrivateKey, kid: str = "rs", **changes: Any) -> str:
    return jwt.encode(claims(**changes), key, algorithm="RS256", headers={"kid": kid})


def hand_made(header: dict[str, Any], payload: dict[str, Any], sign: Any) -> str:
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    return head + "." + sign(head.encode())


@pytest.fixture
async def server(noa_boot: Any, data_dir: str, tmp_path: Path, rsa_key: Any) -> Any:
    pem = tmp_path / "public.pem"
    pem.write_bytes(public_pem(rsa_key))
    config = {
        "server": {"data_dir": data_dir},
        "inference": {"repository": str(tmp_path / "models")},
        "auth": {
            "anonymous": "off",
            "jwt_keys": [{"kid": "rs", "algorithms": ["RS256"], "public_key_file": str(pem)}],
            "jwt_issuer": ISSUER,
            "jwt_audience": AUDIENCE,
            "capability_keys": [{"id": "k1", "secret": {"env": "TEST_CAP_KEY"}}],
        },
    }
    async with noa_boot(PLUGINS, config=config, environ={"TEST_CAP_KEY": CAP_KEY}) as noa:
        yield noa


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


async def refused(client: httpx.AsyncClient, credential: str, path: str = "/v1/plugins") -> int:
    response = await client.get(path, headers=bearer(credential))
    assert response.status_code in (401, 403), response.text
    assert set(response.json()) == {"error"}
    return response.status_code


async def test_jwt_attacks_are_401(server: Any, rsa_key: Any) -> None:
    client = server.client
    good = signed(rsa_key)
    assert (await client.get("/v1/plugins", headers=bearer(good))).status_code == 200
    pem = public_pem(rsa_key)
    attacks = {
        "alg none": hand_made({"alg": "none", "kid": "rs"}, claims(), lambda _: ""),
        "alg none, no kid": hand_made({"alg": "none"}, claims(), lambda _: ""),
        "HS256 signed with the RS256 public key": hand_made(
            {"alg": "HS256", "kid": "rs", "typ": "JWT"},
            claims(),
            lambda head: b64(hmac.new(pem, head, hashlib.sha256).digest()),
        ),
        "expired": signed(rsa_key, exp=int(time.time()) - 3600),
        "not yet valid": signed(rsa_key, nbf=int(time.time()) + 3600),
        "issued in the future": signed(rsa_key, iat=int(time.time()) + 3600),
        "wrong aud": signed(rsa_key, aud="someone-else"),
        "wrong iss": signed(rsa_key, iss="https://evil.test"),
        "missing exp": signed(rsa_key, exp=None),
        "unknown kid": signed(rsa_key, kid="nope"),
        "signed by another key": signed(
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ),
        "signature stripped": good.rsplit(".", 1)[0] + ".",
        "payload swapped": ".".join(
            (good.split(".")[0], b64(json.dumps(claims(sub="root")).encode()), good.split(".")[2])
        ),
        "garbage": "eyJhbGciOi.JSUzI1NiJ9.@@@",
    }
    for name, token in attacks.items():
        assert await refused(client, token) == 401, name


async def test_a_revoked_jti_is_401(server: Any, rsa_key: Any) -> None:
    victim = signed(rsa_key, jti="stolen-1", scope="plugins:read")
    assert (await server.client.get("/v1/plugins", headers=bearer(victim))).status_code == 200
    revoked = await server.client.post(
        "/v1/admin/tokens/revocations",
        json={"jti": "stolen-1", "expires_at": int(time.time()) + 300},
        headers=bearer(signed(rsa_key)),
    )
    assert revoked.status_code in (200, 201, 204), revoked.text
    await asyncio.sleep(0.6)  # auth.revocation_check_s
    assert await refused(server.client, victim) == 401


async def mint(server: Any, rsa_key: Any, **body: Any) -> str:
    response = await server.client.post(
        "/v1/admin/capabilities", json=body, headers=bearer(signed(rsa_key))
    )
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


async def test_capability_token_attacks(server: Any, rsa_key: Any) -> None:
    client = server.client
    token = await mint(server, rsa_key, resource="model:m1", actions=["inference:invoke"], ttl_s=60)
    # The right resource and action get past the policy (404: no such model here).
    assert (await client.get("/v1/models/m1", headers=bearer(token))).status_code == 404
    prefix, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["res"] = "model:m2"
    tampered = f"{prefix}.{b64(json.dumps(body).encode())}.{signature}"
    assert await refused(client, tampered, "/v1/models/m2") == 401
    assert await refused(client, token, "/v1/models/m2") == 403  # another resource
    assert await refused(client, token, "/v1/plugins") == 403  # another action
    short = await mint(server, rsa_key, resource="model:m1", actions=["inference:invoke"], ttl_s=1)
    await asyncio.sleep(3.3)  # past exp and the 2 s leeway for clock skew
    assert await refused(client, short, "/v1/models/m1") == 401  # expired


async def test_api_key_attacks(server: Any, rsa_key: Any) -> None:
    client = server.client
    admin = bearer(signed(rsa_key))
    narrow = await client.post(
        "/v1/admin/keys", json={"name": "narrow", "scopes": ["inference:invoke"]}, headers=admin
    )
    assert await refused(client, narrow.json()["key"]) == 403  # scope too narrow
    wide = await client.post(
        "/v1/admin/keys", json={"name": "wide", "scopes": ["plugins:read"]}, headers=admin
    )
    key = wide.json()["key"]
    assert (await client.get("/v1/plugins", headers={"X-API-Key": key})).status_code == 200
    await client.delete(f"/v1/admin/keys/{wide.json()['id']}", headers=admin)
    await asyncio.sleep(1.1)  # auth.api_key_cache_s
    assert await refused(client, key) == 401
    guessed = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert await refused(client, guessed) == 401


async def test_hostile_bodies_and_names(server: Any, rsa_key: Any) -> None:
    client = server.client
    admin = bearer(signed(rsa_key))
    deep = "[" * 10_000 + "]" * 10_000
    nested = await client.post(
        "/v1/embed", content=deep, headers={**admin, "content-type": "application/json"}
    )
    assert nested.status_code == 400
    huge = await client.post(
        "/v1/embed",
        content=b'{"input": ["' + b"a" * 2_000_000 + b'"]}',
        headers={**admin, "content-type": "application/json"},
    )
    assert huge.status_code == 413
    for method, path, body in (
        ("POST", "/v1/admin/models/load", {"model": "../../etc/passwd"}),
        ("POST", "/v1/admin/models/load", {"model": "..%2F..%2Fetc"}),
        ("POST", "/v1/admin/models/unload", {"model": "/etc/passwd"}),
        ("GET", "/v1/models/..%2F..%2Fetc%2Fpasswd", None),
        ("GET", "/v2/models/..%2F..%2Fetc/ready", None),
        ("GET", "/v2/models/../../etc/passwd", None),
        ("POST", "/v1/embed", {"model": "../../../etc/passwd", "input": ["x"]}),
        ("GET", "/v1/admin/keys/..%2F..%2Fetc", None),
    ):
        response = await client.request(method, path, json=body, headers=admin)
        assert 400 <= response.status_code < 500, (path, body, response.status_code, response.text)
        assert "root:" not in response.text
