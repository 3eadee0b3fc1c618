"""Property-based fuzzing of every route in the OpenAPI document, with authentication
configured: whatever the path parameters, body and credentials, no answer is a 5xx.

The server runs every built-in plugin (the real embedding model included when
``./scripts/setup`` has fetched it). Hypothesis draws, per operation, hostile path
parameters (traversal, control characters, huge), a body (arbitrary JSON, or the
operation's own fields with arbitrary values) and one of several credentials (none,
garbage, a valid token with every scope, one with no scope).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from noa.builtin_plugins.storage.config import StorageConfig
from noa.builtin_plugins.storage.migrate import Migrator, make_engine

REPO = Path(__file__).resolve().parents[3]
PLUGINS = ["http", "observability", "broker", "storage", "cache", "audit", "auth", "inference"]
SECRET = "fuzz-secret-0123456789abcdef0123456789"
ISSUER, AUDIENCE = "https://issuer.test", "noa"
EXAMPLES = int(os.environ.get("NOA_FUZZ_EXAMPLES", "400"))


def token(scope: str) -> str:
    now = int(time.time())
    return jwt.encode(
        {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "fuzz",
            "iat": now,
            "exp": now + 3600,
            "scope": scope,
        },
        SECRET,
        algorithm="HS256",
    )


class Server:
    """The app, its client and the event loop that runs them, for synchronous examples."""

    def __init__(self, runner: asyncio.Runner, noa: Any, schema: dict[str, Any]) -> None:
        self.runner = runner
        self.noa = noa
        self.schema = schema
        self.operations = [
            (method.upper(), path, spec)
            for path, item in sorted(schema["paths"].items())
            for method, spec in sorted(item.items())
            if method in ("get", "post", "put", "patch", "delete")
        ]

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.runner.run(self.noa.client.request(method, path, **kwargs))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from noa.plugin_sdk.testing.harness import boot

    data_dir = str(tmp_path_factory.mktemp("fuzz") / "data")
    apps = {
        "audit": "noa.builtin_plugins.audit.piccolo_app",
        "cache": "noa.builtin_plugins.cache.piccolo_app",
        "auth": "noa.builtin_plugins.auth.piccolo_app",
    }
    config = {
        "server": {"data_dir": data_dir},
        "inference": {"repository": str(REPO / ".noa" / "models")},
        "http": {"request_timeout_s": 10},
        "auth": {
            "anonymous": "off",
            "jwt_keys": [{"algorithms": ["HS256"], "secret": {"env": "FUZZ_JWT_SECRET"}}],
            "jwt_issuer": ISSUER,
            "jwt_audience": AUDIENCE,
            "capability_keys": [{"id": "k1", "secret": {"env": "FUZZ_CAP_KEY"}}],
            "rate_limits": {"default": {"per_s": 10_000, "burst": 10_000}},
        },
    }
    environ = {"FUZZ_JWT_SECRET": SECRET, "FUZZ_CAP_KEY": "fuzz-capability-key-0123456789abcd"}
    with asyncio.Runner() as runner:
        runner.run(Migrator(make_engine("sqlite", StorageConfig(), data_dir), apps).apply())
        context = boot(PLUGINS, config=config, environ=environ)
        noa = runner.run(context.__aenter__())
        try:
            # Wait for the model (if present) so embedding routes run the real kernels.
            for _ in range(600):
                if runner.run(noa.client.get("/ready")).status_code == 200:
                    break
                runner.run(asyncio.sleep(0.1))
            schema = runner.run(noa.client.get("/schema/openapi.json")).json()
            yield Server(runner, noa, schema)
        finally:
            runner.run(context.__aexit__(None, None, None))


hostile_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "..",
            "../../etc/passwd",
            "..%2F..%2Fetc",
            "%00",
            "a/../../b",
            "\x00",
            "ü" * 300,
            "x" * 5000,
        ]
    ),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def credentials() -> st.SearchStrategy[dict[str, str]]:
    return st.sampled_from(
        [
            {},
            {"Authorization": f"Bearer {token('*')}"},
            {"Authorization": f"Bearer {token('')}"},
            {"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30."},
            {"X-API-Key": "noa_sk_000000000000_garbage"},
            {"Authorization": "Bearer noacap1.e30.e30"},
            {"Authorization": "Basic Zm9vOmJhcg=="},
        ]
    )


def body_for(spec: dict[str, Any], schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Arbitrary JSON, or an object with the operation's own field names."""
    fields: list[str] = []
    content = (spec.get("requestBody") or {}).get("content", {})
    for media in content.values():
        ref = (media.get("schema") or {}).get("$ref", "")
        target = schema.get("components", {}).get("schemas", {}).get(ref.rsplit("/", 1)[-1], {})
        fields.extend(target.get("properties", {}))
    if not fields:
        return json_values
    return json_values | st.fixed_dictionaries({}, optional={f: json_values for f in fields})


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_route_answers_5xx_whatever_it_is_sent(server: Server, data: st.DataObject) -> None:
    method, path, spec = data.draw(st.sampled_from(server.operations), label="operation")
    concrete = re.sub(
        r"\{[^}]+\}",
        lambda _: quote(data.draw(hostile_text, label="path parameter"), safe="") or "x",
        path,
    )
    headers = data.draw(credentials(), label="credentials")
    kwargs: dict[str, Any] = {"headers": headers}
    if method in ("POST", "PUT", "PATCH"):
        body = data.draw(body_for(spec, server.schema), label="body")
        kwargs["content"] = json.dumps(body)
        kwargs["headers"] = {**headers, "content-type": "application/json"}
    response = server.request(method, concrete, **kwargs)
    assert response.status_code < 500, (method, concrete, headers, response.text[:500])
