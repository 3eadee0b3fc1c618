"""The inference APIs over gRPC: KServe v2 (``inference.GRPCInferenceService``) and
NOA's own ``noa.v1.InferenceService`` (Embed, Infer, StreamEmbed).

Both call what the REST routes call (:class:`ModelRuntime`, the batcher, the KServe
request validation of :mod:`.kserve_wire` and :mod:`.tensors`), so answers, limits and
errors are the same; the gRPC plugin maps the errors to status codes. A call's deadline
bounds its wait in the batcher, as ``timeout_ms`` does.

KServe tensors come in either encoding the protocol allows: typed ``contents`` or
``raw_input_contents`` (what tritonclient sends); ``embedding`` goes back raw (FP32,
little-endian), as Triton answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from noa.builtin_plugins.inference.api_kserve import (
    _model_metadata,
    _server_ready,
    _server_version,
)
from noa.builtin_plugins.inference.api_native import pick
from noa.builtin_plugins.inference.kserve_wire import (
    MODEL_VERSION,
    InferRequest,
    _RequestInput,
    _RequestOutput,
    binary_output,
    bool_param,
    tensor_inputs,
    timeout_ms_param,
)
from noa.builtin_plugins.inference.runtime import EmbedResult, ModelRuntime, ServedModel
from noa.builtin_plugins.inference.tensors import OUTPUT, TensorInput, read_inputs
from noa.plugin_sdk import GrpcService
from noa.plugin_sdk.errors import BadRequest, NotFound
from noa.proto.kserve.v2 import grpc_predict_v2_pb2 as kserve
from noa.proto.kserve.v2 import grpc_predict_v2_pb2_grpc as kserve_grpc
from noa.proto.v1 import inference_pb2 as pb
from noa.proto.v1 import inference_pb2_grpc as pb_grpc

__all__ = ["grpc_services"]

INVOKE = "inference:invoke"


def _deadline_ms(context: Any, timeout_ms: float | None) -> float | None:
    """The tighter of ``timeout_ms`` and the call's deadline, in milliseconds."""
    remaining = context.time_remaining()
    if remaining is None:
        return timeout_ms
    left = max(remaining * 1000.0, 1.0)
    return left if timeout_ms is None else min(timeout_ms, left)


def _check_version(model: str, version: str) -> None:
    if version and version != MODEL_VERSION:
        raise NotFound(
            f"model {model!r} has no version {version!r} (versions: {MODEL_VERSION})",
            code="model_version_not_found",
        )


# -- KServe v2 ----------------------------------------------------------------------------

_CONTENTS = (
    "bytes_contents",
    "int64_contents",
    "int_contents",
    "uint64_contents",
    "uint_contents",
    "fp32_contents",
    "fp64_contents",
    "bool_contents",
)


def _parameters(params: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        kind = value.WhichOneof("parameter_choice")
        if kind is not None:
            out[key] = getattr(value, kind)
    return out


def _infer_request(request: Any) -> tuple[InferRequest, memoryview]:
    """The request as the REST route reads it: raw contents become the binary section."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; send one per "
            "input, or none and the data in each input's contents"
        )
    inputs = []
    for i, tensor in enumerate(request.inputs):
        params = _parameters(tensor.parameters)
        data: Any = None
        if raw:
            if tensor.HasField("contents"):
                raise BadRequest(
                    f"input {tensor.name!r} has both contents and raw_input_contents",
                    param=tensor.name,
                )
            params["binary_data_size"] = len(raw[i])
        else:
            for field in _CONTENTS:
                values = getattr(tensor.contents, field)
                if values:
                    data = list(values)
                    break
            else:
                data = []
        inputs.append(
            _RequestInput(
                name=tensor.name,
                shape=list(tensor.shape),
                datatype=tensor.datatype,
                parameters=params or None,
                data=data,
            )
        )
    outputs = [
        _RequestOutput(name=o.name, parameters=_parameters(o.parameters) or None)
        for o in request.outputs
    ]
    infer_request = InferRequest(
        inputs=inputs,
        id=request.id or None,
        parameters=_parameters(request.parameters) or None,
        outputs=outputs or None,
    )
    return infer_request, memoryview(b"".join(raw))


class KServeServicer(kserve_grpc.GRPCInferenceServiceServicer):
    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime = runtime

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return kserve.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return kserve.ServerReadyResponse(ready=_server_ready(self.runtime))

    async def ModelReady(self, request: Any, context: Any) -> Any:
        _check_version(request.name, request.version)
        try:
            ready = self.runtime.status(request.name).state == "ready"
        except NotFound:
            ready = False  # as REST answers: not ready, whatever the reason
        return kserve.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return kserve.ServerMetadataResponse(name="noa", version=_server_version())

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        _check_version(request.name, request.version)
        served = self.runtime.get(request.name)
        metadata = _model_metadata(self.runtime, served)
        tensor = kserve.ModelMetadataResponse.TensorMetadata
        return kserve.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata["versions"],
            platform=metadata["platform"],
            inputs=[tensor(**t) for t in metadata["inputs"]],
            outputs=[tensor(**t) for t in metadata["outputs"]],
        )

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        _check_version(request.model_name, request.model_version)
        served = self.runtime.get(request.model_name)
        infer_request, binary = _infer_request(request)
        inputs = tensor_inputs(infer_request, binary)
        params = infer_request.parameters or {}
        truncate = bool(bool_param(params, "truncate", True))
        normalize = bool_param(params, "normalize", None)
        binary_output(infer_request)  # refuses unknown or unsupported outputs
        timeout_ms = _deadline_ms(context, timeout_ms_param(params))
        result = await _embed_inputs(served, inputs, normalize, truncate, timeout_ms)
        vectors = np.ascontiguousarray(result.vectors, dtype="<f4")
        output = kserve.ModelInferResponse.InferOutputTensor(
            name=OUTPUT, datatype="FP32", shape=list(vectors.shape)
        )
        return kserve.ModelInferResponse(
            model_name=served.name,
            model_version=MODEL_VERSION,
            id=request.id,
            outputs=[output],
            raw_output_contents=[vectors.tobytes()],
        )


async def _embed_inputs(
    served: ServedModel,
    inputs: list[TensorInput],
    normalize: bool | None,
    truncate: bool,
    timeout_ms: float | None,
) -> EmbedResult:
    texts, tokens = read_inputs(
        inputs, max_length=served.max_length, vocab_size=served.vocab_size, truncate=truncate
    )
    if texts is not None:
        return await served.embed(
            texts, normalize=normalize, truncate=truncate, timeout_ms=timeout_ms, param="text"
        )
    assert tokens is not None
    return await served.embed_tokens(tokens, normalize=normalize, timeout_ms=timeout_ms)


# -- noa.v1 ---------------------------------------------------------------------------------


def _options(request: Any) -> tuple[bool | None, bool, float | None]:
    normalize = request.normalize if request.HasField("normalize") else None
    truncate = request.truncate if request.HasField("truncate") else True
    timeout_ms = request.timeout_ms if request.HasField("timeout_ms") else None
    if timeout_ms is not None and not timeout_ms > 0:
        raise BadRequest("timeout_ms must be a positive number", param="timeout_ms")
    return normalize, truncate, timeout_ms


class InferenceServicer(pb_grpc.InferenceServiceServicer):
    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime = runtime

    async def _embed(self, request: Any, context: Any) -> Any:
        if not request.input:
            raise BadRequest("input must hold at least one text", param="input")
        for i, text in enumerate(request.input):
            if not text:
                raise BadRequest(f"input[{i}] is empty", param=f"input[{i}]")
        normalize, truncate, timeout_ms = _options(request)
        served = pick(self.runtime, request.model or None)
        result = await served.embed(
            list(request.input),
            normalize=normalize,
            truncate=truncate,
            timeout_ms=_deadline_ms(context, timeout_ms),
        )
        return pb.EmbedResponse(
            model=served.name,
            dimensions=served.dimension,
            embeddings=[pb.Vector(values=row) for row in result.vectors.tolist()],
            token_counts=result.token_counts,
            total_tokens=sum(result.token_counts),
            truncated=result.truncated,
        )

    async def Embed(self, request: Any, context: Any) -> Any:
        return await self._embed(request, context)

    async def StreamEmbed(self, requests: Any, context: Any) -> AsyncIterator[Any]:
        async for request in requests:
            yield await self._embed(request, context)

    async def Infer(self, request: Any, context: Any) -> Any:
        normalize, truncate, timeout_ms = _options(request)
        served = pick(self.runtime, request.model or None)
        inputs = []
        for tensor in request.inputs:
            data: Any
            if tensor.bytes_data:
                data = list(tensor.bytes_data)
            elif tensor.int_data:
                data = np.asarray(tensor.int_data, dtype=np.int64)
            elif tensor.fp32_data:
                data = list(tensor.fp32_data)
            else:
                data = []
            inputs.append(TensorInput(tensor.name, tensor.datatype, list(tensor.shape), data))
        result = await _embed_inputs(
            served, inputs, normalize, truncate, _deadline_ms(context, timeout_ms)
        )
        vectors = result.vectors
        output = pb.Tensor(
            name=OUTPUT,
            datatype="FP32",
            shape=list(vectors.shape),
            fp32_data=vectors.reshape(-1).tolist(),
        )
        return pb.InferResponse(model=served.name, outputs=[output])


def _model_named(request: Any) -> str:
    return f"model:{request.name}"


def _model_inferred(request: Any) -> str:
    return f"model:{request.model_name}"


def grpc_services(runtime: ModelRuntime) -> list[tuple[str, GrpcService]]:
    """The two services, named as the REST route groups whose rate limits they share."""
    kserve_service = GrpcService(
        name="inference.GRPCInferenceService",
        servicer=KServeServicer(runtime),
        add_to_server=kserve_grpc.add_GRPCInferenceServiceServicer_to_server,
        scope=INVOKE,
        # As the /v2/models/{name}/... routes: a capability token for one model works.
        resources={
            "ModelReady": _model_named,
            "ModelMetadata": _model_named,
            "ModelInfer": _model_inferred,
        },
        group="kserve-v2",
        health_checks=("models",),
    )
    native = GrpcService(
        name="noa.v1.InferenceService",
        servicer=InferenceServicer(runtime),
        add_to_server=pb_grpc.add_InferenceServiceServicer_to_server,
        scope=INVOKE,
        group="inference",
        health_checks=("models",),
    )
    return [("kserve-v2", kserve_service), ("inference", native)]
