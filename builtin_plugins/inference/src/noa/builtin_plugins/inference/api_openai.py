"""The OpenAI-compatible API: ``POST /v1/embeddings``, ``GET /v1/models`` and
``GET /v1/models/{model}``, enough for the official ``openai`` client and the libraries
built on it to work unchanged.

Texts go through :meth:`ServedModel.embed`, so they share the batcher, the limits and
the metrics of every other API. Errors are the standard error body, whose ``message``,
``type``, ``param`` and ``code`` are OpenAI's error object; the client raises its own
exception classes (``BadRequestError``, ``NotFoundError`` ...) from the status code.

Where OpenAI's API and this server differ:

- ``input`` as token-id arrays is refused (400, ``token_input_unsupported``): such ids
  come from OpenAI's tokenizer (tiktoken), a vocabulary this model does not share, so
  they can be neither embedded as ids nor turned back into the text they stood for.
- ``dimensions`` keeps the first N components and scales them back to unit length, as
  OpenAI's Matryoshka-trained models do. A model not trained that way (MiniLM is not)
  gives plain truncated vectors, whose quality is whatever it is: measure before use.
- Texts longer than the model's limit are cut to it (OpenAI refuses them); ``user`` is
  accepted and ignored.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
from litestar import Request, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody
from noa.builtin_plugins.inference.disconnect import client_gone
from noa.builtin_plugins.inference.errors import ModelNotFound, ModelNotReady
from noa.builtin_plugins.inference.runtime import ModelRuntime, ModelStatus, ServedModel
from noa.plugin_sdk.auth import RESOURCE_OPT
from noa.plugin_sdk.errors import ApiError, BadRequest, NotFound
from numpy.typing import NDArray

__all__ = ["openai_handlers"]

Text = Annotated[str, msgspec.Meta(min_length=1)]
# Token ids are declared so that a client sending them gets a refusal that says why,
# rather than a type error; they are never embedded.
InputItem = Text | int | list[int]
Inputs = Annotated[list[InputItem], msgspec.Meta(min_length=1)]


class EmbeddingsRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """OpenAI's embeddings request.

    ``input`` is one text or a list of texts, none empty (token-id arrays are refused).
    ``encoding_format`` is ``float`` (lists of numbers, the default) or ``base64`` (each
    vector as little-endian float32 bytes in base64: what the ``openai`` client asks for
    unless told otherwise). ``dimensions`` keeps the first N components and rescales them
    to unit length. ``user`` is accepted and ignored.
    """

    input: Text | Inputs
    model: Annotated[str, msgspec.Meta(min_length=1)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, msgspec.Meta(ge=1)] | None = None
    user: str | None = None


class Embedding(msgspec.Struct, kw_only=True):
    object: Literal["embedding"] = "embedding"
    index: int
    # Numbers, or base64 of little-endian float32 bytes when encoding_format is base64.
    embedding: list[float] | str


class Usage(msgspec.Struct, kw_only=True):
    # Tokens the inputs were computed with, after truncation to the model's limit.
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class Model(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["model"] = "model"
    # When this worker loaded the model (Unix time, seconds).
    created: int
    owned_by: str = "noa"


class ModelList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[Model]


def _texts(value: str | list[InputItem]) -> list[str]:
    if isinstance(value, str):
        return [value]
    texts = [item for item in value if isinstance(item, str)]
    if len(texts) != len(value):
        raise BadRequest(
            "input holds token ids; this server embeds texts only: token ids from OpenAI's "
            "tokenizer (tiktoken) mean nothing to this model's vocabulary. Send the texts "
            "as strings (with LangChain's OpenAIEmbeddings: check_embedding_ctx_length=False)",
            code="token_input_unsupported",
            param="input",
        )
    return texts


def _resized(vectors: NDArray[np.float32], dimensions: int | None) -> NDArray[np.float32]:
    if dimensions is None:
        return vectors
    cut = vectors[:, :dimensions]
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    scaled: NDArray[np.float32] = (cut / np.maximum(norms, np.finfo(np.float32).tiny)).astype(
        np.float32, copy=False
    )
    return scaled


def _encoded(row: NDArray[np.float32], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(row.astype("<f4", copy=False).tobytes()).decode("ascii")
    values: list[float] = row.tolist()
    return values


def _ready(runtime: ModelRuntime) -> list[ModelStatus]:
    return [s for s in runtime.statuses() if s.state == "ready"]


def _not_loaded(runtime: ModelRuntime, name: str) -> ApiError:
    """The 404 for a model that is not ready, whether unknown, unloaded or failed."""
    ready = [s.name for s in _ready(runtime)]
    try:
        status = runtime.status(name)
    except ModelNotFound:
        return ModelNotFound(name, ready)
    listing = ", ".join(ready) or "none"
    cause = f" ({status.error})" if status.error else ""
    return NotFound(
        f"model {name!r} is {status.state}{cause}, not loaded; load it with POST "
        f"/v1/admin/models/load (loaded models: {listing})",
        code="model_not_found",
        param="model",
    )


def _served(runtime: ModelRuntime, name: str) -> ServedModel:
    try:
        return runtime.get(name)
    except ModelNotReady:
        # A model on its way in is worth a retry (503, Retry-After); one that is
        # unloaded or failed is not, and OpenAI clients retry 503s on their own.
        if runtime.status(name).state == "loading":
            raise
    except ModelNotFound:
        pass
    # Named like /v1/models: only the loaded models are offered.
    raise _not_loaded(runtime, name)


def _card(status: ModelStatus) -> Model:
    return Model(id=status.name, created=int(status.loaded_at or 0))


# The errors each route may answer, for the OpenAPI document (whose HTTP core gives
# every 4xx and 5xx the standard error body).
_NOT_FOUND = {404: ResponseSpec(None, description="The model is unknown or not loaded")}
_EMBED_ERRORS = {
    **_NOT_FOUND,
    413: ResponseSpec(None, description="Too many inputs, or an input too long"),
    429: ResponseSpec(None, description="The model's queue is full; retry after Retry-After"),
    503: ResponseSpec(None, description="The model is still loading; retry after Retry-After"),
    504: ResponseSpec(None, description="The request was not computed in time"),
}


def openai_handlers(runtime: ModelRuntime) -> list[HTTPRouteHandler]:
    # Descriptions go in the decorators: they are what the OpenAPI document shows.
    @post(
        "/v1/embeddings",
        summary="Create embeddings (OpenAI-compatible)",
        description=(
            "OpenAI's `POST /v1/embeddings`: texts to vectors, through the model's batcher.\n\n"
            "`input` is a string or a list of strings; empty strings and empty lists are "
            "refused with 400, and so are token-id arrays (`token_input_unsupported`): they "
            "are OpenAI tokenizer ids, not this model's. Texts longer than the model's limit "
            "are cut to it; `usage.prompt_tokens` counts the tokens computed. `dimensions` "
            "(1 to the model's dimension) keeps the first N components and rescales them to "
            "unit length. `encoding_format` `base64` sends each vector as little-endian "
            "float32 bytes in base64."
        ),
        tags=["openai"],
        status_code=200,
        responses=_EMBED_ERRORS,
    )
    async def embeddings(
        data: JSONBody[EmbeddingsRequest], request: Request[Any, Any, Any]
    ) -> EmbeddingsResponse:
        texts = _texts(data.input)
        served = _served(runtime, data.model)
        if data.dimensions is not None and data.dimensions > served.dimension:
            raise BadRequest(
                f"dimensions is {data.dimensions}; model {served.name!r} gives at most "
                f"{served.dimension}",
                code="invalid_dimensions",
                param="dimensions",
            )
        async with client_gone(request.receive) as gone:
            result = await served.embed(texts, truncate=True, cancelled=gone)
        vectors = _resized(result.vectors, data.dimensions)
        tokens = sum(result.token_counts)
        return EmbeddingsResponse(
            data=[
                Embedding(index=i, embedding=_encoded(row, data.encoding_format))
                for i, row in enumerate(vectors)
            ],
            model=served.name,
            usage=Usage(prompt_tokens=tokens, total_tokens=tokens),
        )

    @get(
        "/v1/models",
        summary="List the loaded models (OpenAI-compatible)",
        description=(
            "OpenAI's `GET /v1/models`: the models this worker has loaded and can use now. "
            "Models in the repository that are not loaded (or failed to load) are not "
            "listed; `GET /v1/admin/models` shows every model with its state."
        ),
        tags=["openai"],
    )
    async def list_models() -> ModelList:
        return ModelList(data=[_card(s) for s in _ready(runtime)])

    @get(
        "/v1/models/{model_id:path}",
        summary="Describe a loaded model (OpenAI-compatible)",
        description=(
            "OpenAI's `GET /v1/models/{model}`. Model ids may hold `/` "
            "(`sentence-transformers/all-MiniLM-L6-v2`), sent as is or as `%2F`. "
            "404 when the model is unknown or not loaded."
        ),
        tags=["openai"],
        responses=_NOT_FOUND,
        opt={RESOURCE_OPT: lambda params: f"model:{params['model_id'].lstrip('/')}"},
    )
    async def retrieve_model(model_id: FromPath[str]) -> Model:
        name = model_id.lstrip("/")  # a path parameter keeps its leading slash
        for status in _ready(runtime):
            if status.name == name:
                return _card(status)
        raise _not_loaded(runtime, name)

    return [embeddings, list_models, retrieve_model]
