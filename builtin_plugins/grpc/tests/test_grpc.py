"""The gRPC transport in-process: a real kernel, its real grpc.aio server on a free port,
driven by real gRPC clients (the generated stubs, health and reflection)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from noa.plugin_sdk.testing import boot
from noa.proto.kserve.v2 import grpc_predict_v2_pb2 as kserve
from noa.proto.kserve.v2 import grpc_predict_v2_pb2_grpc as kserve_grpc
from noa.proto.v1 import inference_pb2 as pb
from noa.proto.v1 import inference_pb2_grpc as pb_grpc

from .conftest import MODEL, grpc_port

GRPC = {"enabled": True, "port": 0, "health_interval_s": 0.1}
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def wait_ready(client: Any) -> None:
    for _ in range(1200):
        if (await client.get("/ready")).status_code == 200:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the kernel never turned ready")


@pytest.fixture
async def server(model_repository: Path) -> Any:
    config = {"inference": {"repository": str(model_repository)}, "grpc": GRPC}
    async with boot(["http", "observability", "inference", "grpc"], config=config) as kernel:
        await wait_ready(kernel.client)
        yield kernel


async def test_embed_over_grpc_equals_v1_embed(server: Any, channel_to: Any) -> None:
    texts = ["a river runs through it", "gRPC and REST answer alike"]
    stub = pb_grpc.InferenceServiceStub(channel_to(grpc_port(server)))
    call = stub.Embed(pb.EmbedRequest(input=texts), timeout=60)
    answer = await call
    rest = (await server.client.post("/v1/embed", json={"input": texts})).json()
    assert answer.model == MODEL == rest["model"] and answer.dimensions == 384
    vectors = np.array([list(v.values) for v in answer.embeddings])
    np.testing.assert_allclose(vectors, np.array(rest["embeddings"]), atol=1e-6)
    assert list(answer.token_counts) == rest["token_counts"]
    assert dict(await call.trailing_metadata())["x-request-id"]


async def test_stream_embed_answers_each_request_in_order(server: Any, channel_to: Any) -> None:
    stub = pb_grpc.InferenceServiceStub(channel_to(grpc_port(server)))
    requests = [pb.EmbedRequest(input=[f"text number {i}"]) for i in range(3)]
    answers = [a async for a in stub.StreamEmbed(iter(requests), timeout=60)]
    assert len(answers) == 3
    one = await stub.Embed(requests[2], timeout=60)
    np.testing.assert_allclose(answers[2].embeddings[0].values, one.embeddings[0].values, atol=1e-6)


async def test_a_clients_mistake_is_invalid_argument_or_not_found_never_unknown(
    server: Any, channel_to: Any
) -> None:
    channel = channel_to(grpc_port(server))
    stub = pb_grpc.InferenceServiceStub(channel)
    kstub = kserve_grpc.GRPCInferenceServiceStub(channel)
    cases = [
        (stub.Embed(pb.EmbedRequest(input=[]), timeout=10), grpc.StatusCode.INVALID_ARGUMENT),
        (
            stub.Embed(pb.EmbedRequest(input=["x"], model="acme/missing"), timeout=10),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            stub.Embed(pb.EmbedRequest(input=["x"], timeout_ms=-1), timeout=10),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            kstub.ModelInfer(
                kserve.ModelInferRequest(
                    model_name=MODEL,
                    inputs=[
                        kserve.ModelInferRequest.InferInputTensor(
                            name="text",
                            datatype="BYTES",
                            shape=[2],
                            contents=kserve.InferTensorContents(bytes_contents=[b"only one"]),
                        )
                    ],
                ),
                timeout=10,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            kstub.ModelMetadata(kserve.ModelMetadataRequest(name=MODEL, version="7"), timeout=10),
            grpc.StatusCode.NOT_FOUND,
        ),
    ]
    for call, code in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == code, caught.value.details()
        assert caught.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(pb.EmbedRequest(input=["x", ""]), timeout=10)
    assert caught.value.details() == "input[1] is empty"


async def test_a_call_past_its_deadline_is_deadline_exceeded(server: Any, channel_to: Any) -> None:
    stub = pb_grpc.InferenceServiceStub(channel_to(grpc_port(server)))
    busy = pb.EmbedRequest(input=["a long text that keeps the model busy " * 20] * 64)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(busy, timeout=0.05)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server is fine afterwards.
    assert (await stub.Embed(pb.EmbedRequest(input=["still here"]), timeout=60)).embeddings


async def test_kserve_over_grpc_infers_from_typed_and_raw_contents(
    server: Any, channel_to: Any
) -> None:
    stub = kserve_grpc.GRPCInferenceServiceStub(channel_to(grpc_port(server)))
    assert (await stub.ServerLive(kserve.ServerLiveRequest())).live
    assert (await stub.ServerReady(kserve.ServerReadyRequest())).ready
    assert (await stub.ModelReady(kserve.ModelReadyRequest(name=MODEL))).ready
    assert not (await stub.ModelReady(kserve.ModelReadyRequest(name="acme/missing"))).ready
    metadata = await stub.ModelMetadata(kserve.ModelMetadataRequest(name=MODEL))
    assert metadata.versions == ["1"] and metadata.outputs[0].name == "embedding"
    assert list(metadata.outputs[0].shape) == [-1, 384]
    texts = [b"first text", b"second text"]
    tensor = kserve.ModelInferRequest.InferInputTensor
    typed = kserve.ModelInferRequest(
        model_name=MODEL,
        id="typed",
        inputs=[
            tensor(
                name="text",
                datatype="BYTES",
                shape=[2],
                contents=kserve.InferTensorContents(bytes_contents=texts),
            )
        ],
    )
    raw = kserve.ModelInferRequest(
        model_name=MODEL,
        model_version="1",
        inputs=[tensor(name="text", datatype="BYTES", shape=[2])],
        raw_input_contents=[b"".join(len(t).to_bytes(4, "little") + t for t in texts)],
    )
    reference = (
        await server.client.post("/v1/embed", json={"input": [t.decode() for t in texts]})
    ).json()["embeddings"]
    for request in (typed, raw):
        answer = await stub.ModelInfer(request, timeout=60)
        assert answer.model_name == MODEL and answer.id == request.id
        assert list(answer.outputs[0].shape) == [2, 384]
        vectors = np.frombuffer(answer.raw_output_contents[0], dtype="<f4").reshape(2, 384)
        np.testing.assert_allclose(vectors, np.array(reference), atol=1e-5)


async def test_calls_are_counted_by_method_and_code(server: Any, channel_to: Any) -> None:
    embed = {"grpc_service": "noa.v1.InferenceService", "grpc_method": "Embed"}
    counts = [
        ("grpc_server_handled_total", "OK"),
        ("grpc_server_handled_total", "INVALID_ARGUMENT"),
        ("grpc_server_handling_seconds_count", "OK"),
    ]

    async def read() -> list[float]:
        text = (await server.client.get("/metrics")).text
        return [metric(text, name, grpc_code=code, **embed) for name, code in counts]

    before = await read()
    stub = pb_grpc.InferenceServiceStub(channel_to(grpc_port(server)))
    await stub.Embed(pb.EmbedRequest(input=["count me"]), timeout=60)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Embed(pb.EmbedRequest(input=[]), timeout=60)
    # A call is counted as it ends on the server, which may be just after the client
    # has its answer: read until the counts settle.
    for _ in range(100):
        after = await read()
        if [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1]:
            break
        await asyncio.sleep(0.02)
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1]


async def test_health_and_reflection_answer_and_health_turns_not_serving_on_shutdown(
    server: Any, channel_to: Any
) -> None:
    channel = channel_to(grpc_port(server))
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "noa.v1.InferenceService", "inference.GRPCInferenceService"):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == SERVING, service
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await health.Check(health_pb2.HealthCheckRequest(service="acme.Nothing"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = reflect.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    listed = {s.name async for reply in replies for s in reply.list_services_response.service}
    assert {
        "noa.v1.InferenceService",
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= listed

    watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await watch.read()).status == SERVING
    stopping = asyncio.create_task(server.kernel.shutdown())
    assert (await watch.read()).status == NOT_SERVING
    await stopping
