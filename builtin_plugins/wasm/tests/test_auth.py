"""With the auth plugin on and anonymous access off, invoking a WASM plugin (and listing
them) needs ``wasm:invoke`` and reloading needs ``wasm:admin``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import jwt
from noa.builtin_plugins.storage.config import StorageConfig
from noa.builtin_plugins.storage.migrate import Migrator, make_engine
from noa.plugin_sdk.testing.harness import boot

SECRET = "wasm-test-secret-of-at-least-32-bytes-0123"
ISSUER, AUDIENCE = "https://issuer.test", "noa"
INVOKE = ("POST", "/v1/plugins/echo/invoke", {"entry": "run", "input": {"a": 1}})
LIST = ("GET", "/v1/wasm/plugins", None)
RELOAD = ("POST", "/v1/admin/wasm/reload", None)
# The tables the auth plugin's neighbours (storage, cache) need, on SQLite.
APPS = {
    "cache": "noa.builtin_plugins.cache.piccolo_app",
    "auth": "noa.builtin_plugins.auth.piccolo_app",
}
CASES = [
    (INVOKE, None, 401),
    (INVOKE, "other:scope", 403),
    (INVOKE, "wasm:admin", 403),
    (INVOKE, "wasm:invoke", 200),
    (LIST, None, 401),
    (LIST, "other:scope", 403),
    (LIST, "wasm:invoke", 200),
    (RELOAD, None, 401),
    (RELOAD, "wasm:invoke", 403),
    (RELOAD, "wasm:admin", 200),
]


def bearer(scope: str) -> dict[str, str]:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300}
    return {"Authorization": "Bearer " + jwt.encode({**claims, "scope": scope}, SECRET)}


async def test_invoke_needs_wasm_invoke_and_reload_wasm_admin(
    tmp_path: Path, plugin_root: Path, make_plugin: Callable[..., Path], wat: ModuleType
) -> None:
    make_plugin("echo", wat.ECHO)
    data_dir = str(tmp_path / "data")
    await Migrator(make_engine("sqlite", StorageConfig(), data_dir), APPS).apply()
    config = {
        "server": {"data_dir": data_dir},
        "wasm": {"plugin_dir": str(plugin_root)},
        "auth": {
            "anonymous": "off",
            "jwt_keys": [{"algorithms": ["HS256"], "secret": {"env": "TEST_JWT_SECRET"}}],
            "jwt_issuer": ISSUER,
            "jwt_audience": AUDIENCE,
        },
    }
    plugins = ["http", "storage", "cache", "auth", "wasm"]
    async with boot(plugins, config=config, environ={"TEST_JWT_SECRET": SECRET}) as noa:
        seen = []
        for (method, path, body), scope, _status in CASES:
            headers = bearer(scope) if scope is not None else {}
            answer = await noa.client.request(method, path, json=body, headers=headers)
            seen.append(((method, path, body), scope, answer.status_code))
        assert seen == CASES
        answer = await noa.client.request(*INVOKE[:2], json=INVOKE[2], headers=bearer("wasm:*"))
        assert answer.json()["output"] == {"a": 1}
