"""Access control over gRPC with the auth plugin on: the same policy, scopes and rate
limits as REST; health and reflection need no credentials. Also: a plugin's contribution
through ``noa_register_grpc_services`` is checked when the server starts."""

from __future__ import annotations

import asyncio
import time
import types
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from noa.builtin_plugins.storage.config import StorageConfig
from noa.builtin_plugins.storage.migrate import Migrator, make_engine
from noa.plugin_sdk import PluginStartError, Registry, hookimpl
from noa.plugin_sdk.testing import boot
from noa.proto.kserve.v2 import grpc_predict_v2_pb2 as kserve
from noa.proto.kserve.v2 import grpc_predict_v2_pb2_grpc as kserve_grpc
from noa.proto.v1 import inference_pb2 as pb
from noa.proto.v1 import inference_pb2_grpc as pb_grpc

from .conftest import MODEL, grpc_port

PLUGINS = ["http", "observability", "broker", "storage", "cache", "audit", "auth"]
SECRET = "test-secret-of-at-least-32-bytes-0123456789"
ISSUER = "https://issuer.test"
APPS = {
    "audit": "noa.builtin_plugins.audit.piccolo_app",
    "cache": "noa.builtin_plugins.cache.piccolo_app",
    "auth": "noa.builtin_plugins.auth.piccolo_app",
}


def token(scope: str) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "noa", "sub": "alice", "iat": now, "exp": now + 300}
    return jwt.encode({**claims, "scope": scope}, SECRET, algorithm="HS256")


@pytest.fixture
async def server(tmp_path: Path, model_repository: Path) -> Any:
    data_dir = str(tmp_path / "data")
    await Migrator(make_engine("sqlite", StorageConfig(), data_dir), APPS).apply()
    config = {
        "server": {"data_dir": data_dir},
        "auth": {
            "anonymous": "off",
            "jwt_keys": [{"algorithms": ["HS256"], "secret": {"env": "TEST_JWT_SECRET"}}],
            "jwt_issuer": ISSUER,
            "jwt_audience": "noa",
            "rate_limits": {"inference": {"per_s": 0.001, "burst": 3}},
            "capability_keys": [{"id": "k1", "secret": {"env": "TEST_CAP_KEY"}}],
        },
        "inference": {"repository": str(model_repository)},
        "grpc": {"enabled": True, "port": 0},
    }
    plugins = [*PLUGINS, "inference", "grpc"]
    env = {"TEST_JWT_SECRET": SECRET, "TEST_CAP_KEY": "capability-key-0123456789abcdef0123"}
    async with boot(plugins, config=config, environ=env) as kernel:
        for _ in range(1200):
            if (await kernel.client.get("/ready")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        yield kernel


async def test_the_access_policy_decides_every_call_but_health(
    server: Any, channel_to: Any
) -> None:
    channel = channel_to(grpc_port(server))
    health = health_pb2_grpc.HealthStub(channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service="noa.v1.InferenceService"))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    stub = pb_grpc.InferenceServiceStub(channel)
    request = pb.EmbedRequest(input=["who may ask?"])

    async def code_of(*metadata: tuple[str, str]) -> tuple[grpc.StatusCode, str]:
        try:
            await stub.Embed(request, metadata=metadata, timeout=60)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
        return grpc.StatusCode.OK, ""

    # Loopback callers get no free pass once the auth plugin is on.
    assert (await code_of())[0] == grpc.StatusCode.UNAUTHENTICATED
    assert (await code_of(("authorization", "Bearer nonsense")))[0] == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    code, details = await code_of(("authorization", f"Bearer {token('retrieval:search')}"))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "inference:invoke" in details
    assert (await code_of(("authorization", f"Bearer {token('inference:invoke')}")))[0] == (
        grpc.StatusCode.OK
    )

    # An API key made through the auth plugin's admin API, in either metadata key.
    created = await server.client.post(
        "/v1/admin/keys",
        json={"name": "grpc-client", "scopes": ["inference:invoke"]},
        headers={"Authorization": f"Bearer {token('*')}"},
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert (await code_of(("x-api-key", key)))[0] == grpc.StatusCode.OK
    # The burst of 3 is spent (one JWT call, one key call: the limit is per caller, so
    # the key has one left), then RESOURCE_EXHAUSTED with Retry-After.
    assert (await code_of(("authorization", f"Bearer {key}")))[0] == grpc.StatusCode.OK
    assert (await code_of(("authorization", f"Bearer {key}")))[0] == grpc.StatusCode.OK
    with pytest.raises(grpc.aio.AioRpcError) as limited:
        await stub.Embed(request, metadata=(("x-api-key", key),), timeout=60)
    assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "retry-after" in dict(limited.value.trailing_metadata() or ())


async def test_a_capability_token_for_a_model_works_on_the_kserve_calls_naming_it(
    server: Any, channel_to: Any
) -> None:
    minted = await server.client.post(
        "/v1/admin/capabilities",
        json={"resource": f"model:{MODEL}", "actions": ["inference:invoke"], "ttl_s": 60},
        headers={"Authorization": f"Bearer {token('*')}"},
    )
    assert minted.status_code == 201, minted.text
    capability = (("authorization", f"Bearer {minted.json()['token']}"),)
    channel = channel_to(grpc_port(server))
    kstub = kserve_grpc.GRPCInferenceServiceStub(channel)
    assert (await kstub.ModelReady(kserve.ModelReadyRequest(name=MODEL), metadata=capability)).ready
    metadata = await kstub.ModelMetadata(
        kserve.ModelMetadataRequest(name=MODEL), metadata=capability, timeout=60
    )
    assert metadata.name == MODEL
    tensor = kserve.ModelInferRequest.InferInputTensor(
        name="text",
        datatype="BYTES",
        shape=[1],
        contents=kserve.InferTensorContents(bytes_contents=[b"one model only"]),
    )
    infer = kserve.ModelInferRequest(model_name=MODEL, inputs=[tensor])
    answer = await kstub.ModelInfer(infer, metadata=capability, timeout=60)
    assert list(answer.outputs[0].shape) == [1, 384]

    # Another model, and calls that name no model, are refused to it.
    refused = [
        kstub.ModelMetadata(kserve.ModelMetadataRequest(name="acme/other"), metadata=capability),
        kstub.ServerMetadata(kserve.ServerMetadataRequest(), metadata=capability),
        pb_grpc.InferenceServiceStub(channel).Embed(
            pb.EmbedRequest(input=["x"], model=MODEL), metadata=capability
        ),
    ]
    for call in refused:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, caught.value.details()


async def test_a_contribution_that_is_not_a_grpc_service_stops_startup(tmp_path: Path) -> None:
    module = types.ModuleType("bad_grpc")

    @hookimpl
    def noa_register_grpc_services(services: Registry[Any]) -> None:
        services.add("bad", object())

    module.noa_register_grpc_services = noa_register_grpc_services  # type: ignore[attr-defined]
    config = {"grpc": {"enabled": True, "port": 0}}
    with pytest.raises(PluginStartError) as caught:
        async with boot(["http", "grpc"], config=config, extra_plugins={"bad": module}):
            pass
    assert "'bad' is a object, not a noa.plugin_sdk.GrpcService" in str(caught.value)
