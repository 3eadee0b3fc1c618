"""NOA's own inference API: ``/v1/embed``, ``/v1/infer`` and the model admin routes."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import JSONBody
from noa.builtin_plugins.inference.admin_sync import AdminSync
from noa.builtin_plugins.inference.disconnect import client_gone
from noa.builtin_plugins.inference.runtime import ModelRuntime, ModelStatus, ServedModel
from noa.builtin_plugins.inference.tensors import OUTPUT, TensorInput, read_inputs

__all__ = ["InferRequest", "InferResponse", "admin_handlers", "infer_tensors", "native_handlers"]

Text = Annotated[str, msgspec.Meta(min_length=1)]
Timeout = Annotated[float, msgspec.Meta(gt=0)]


class _Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What every native inference request may say besides its inputs."""

    # The model (default: inference.default_model, else the first loaded).
    model: str | None = None
    # Scale each vector to unit length (the model's own setting when absent).
    normalize: bool | None = None
    # Cut inputs longer than the model's limit; false refuses them with 400.
    truncate: bool = True
    timeout_ms: Timeout | None = None


class EmbedRequest(_Options, forbid_unknown_fields=True, kw_only=True):
    """Texts to embed. ``input`` is one text or a list of them."""

    input: Text | list[Text]


class EmbedResponse(msgspec.Struct, kw_only=True):
    model: str
    dimensions: int
    embeddings: list[list[float]]
    # Tokens each input was computed with (after truncation), and their sum.
    token_counts: list[int]
    total_tokens: int
    # Indexes of the inputs that were cut to the model's maximum length.
    truncated: list[int]


class Tensor(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    datatype: str
    shape: list[int]
    data: list[Any]


class InferRequest(_Options, forbid_unknown_fields=True, kw_only=True):
    """Named tensors: ``text`` (BYTES ``[n]``) or ``input_ids`` (INT ``[n, length]``,
    optional ``attention_mask``)."""

    inputs: list[Tensor]


class OutputTensor(msgspec.Struct, kw_only=True):
    name: str
    datatype: Literal["FP32"]
    shape: list[int]
    data: list[float]


class InferResponse(msgspec.Struct, kw_only=True):
    model: str
    outputs: list[OutputTensor]


class ModelAction(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    model: Annotated[str, msgspec.Meta(min_length=1)]


class ModelList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[ModelStatus]


def pick(runtime: ModelRuntime, name: str | None) -> ServedModel:
    return runtime.get(name) if name else runtime.default()


async def infer_tensors(
    runtime: ModelRuntime, data: InferRequest, *, cancelled: asyncio.Event | None = None
) -> InferResponse:
    """``/v1/infer``'s work, shared with the ``infer`` task type."""
    served = pick(runtime, data.model)
    inputs = [TensorInput(t.name, t.datatype, t.shape, t.data) for t in data.inputs]
    texts, tokens = read_inputs(
        inputs, max_length=served.max_length, vocab_size=served.vocab_size, truncate=data.truncate
    )
    if texts is not None:
        result = await served.embed(
            texts,
            normalize=data.normalize,
            truncate=data.truncate,
            timeout_ms=data.timeout_ms,
            cancelled=cancelled,
            param="text",
        )
    else:
        assert tokens is not None
        result = await served.embed_tokens(
            tokens, normalize=data.normalize, timeout_ms=data.timeout_ms, cancelled=cancelled
        )
    vectors = result.vectors
    output = OutputTensor(
        name=OUTPUT, datatype="FP32", shape=list(vectors.shape), data=vectors.reshape(-1).tolist()
    )
    return InferResponse(model=served.name, outputs=[output])


def native_handlers(runtime: ModelRuntime) -> list[HTTPRouteHandler]:
    @post("/v1/embed", summary="Embed texts", tags=["inference"], status_code=200)
    async def embed(data: JSONBody[EmbedRequest], request: Request[Any, Any, Any]) -> EmbedResponse:
        """Texts to vectors, through the model's dynamic batcher.

        Texts longer than the model's limit are cut (``truncate``, the default) or refused
        with 400. A full queue answers 429 with Retry-After; a request still waiting after
        ``timeout_ms`` answers 504.
        """
        served = pick(runtime, data.model)
        texts = [data.input] if isinstance(data.input, str) else data.input
        async with client_gone(request.receive) as gone:
            result = await served.embed(
                texts,
                normalize=data.normalize,
                truncate=data.truncate,
                timeout_ms=data.timeout_ms,
                cancelled=gone,
            )
        return EmbedResponse(
            model=served.name,
            dimensions=served.dimension,
            embeddings=result.vectors.tolist(),
            token_counts=result.token_counts,
            total_tokens=sum(result.token_counts),
            truncated=result.truncated,
        )

    @post("/v1/infer", summary="Run a model on named tensors", tags=["inference"], status_code=200)
    async def infer(data: JSONBody[InferRequest], request: Request[Any, Any, Any]) -> InferResponse:
        """Named tensors in, named tensors out; shapes and datatypes are validated.

        A text-embedding model takes ``text`` (BYTES, shape ``[n]``) or ``input_ids``
        (INT32/INT64, shape ``[n, length]``, with an optional ``attention_mask`` of the
        same shape whose ones mark each row's tokens) and answers ``embedding`` (FP32,
        shape ``[n, dimension]``).
        """
        async with client_gone(request.receive) as gone:
            return await infer_tensors(runtime, data, cancelled=gone)

    return [embed, infer]


def admin_handlers(sync: AdminSync) -> list[HTTPRouteHandler]:
    runtime = sync.runtime

    @get("/v1/admin/models", summary="Models and their states", tags=["admin"])
    async def list_models() -> ModelList:
        """Every model in the repository with its state in this worker: ``unloaded``,
        ``loading``, ``ready``, ``failed`` (with the cause) or ``unloading``."""
        return ModelList(data=runtime.statuses())

    @post("/v1/admin/models/load", summary="Load a model", tags=["admin"], status_code=200)
    async def load(data: JSONBody[ModelAction]) -> ModelStatus:
        """Load a model from the repository (a no-op when it is loaded), in this worker
        and, through the broker, in every other. 404 when the repository has no such
        model; 422 naming the cause when it cannot be loaded."""
        return await sync.load(data.model)

    @post("/v1/admin/models/unload", summary="Unload a model", tags=["admin"], status_code=200)
    async def unload(data: JSONBody[ModelAction]) -> ModelStatus:
        """Unload a model and release its memory, in this worker and, through the
        broker, in every other; requests still queued for it get 503."""
        return await sync.unload(data.model)

    return [list_models, load, unload]
