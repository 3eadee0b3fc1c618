"""KServe v2 / Open Inference Protocol REST routes under ``/v2``.

Health, server and model metadata, a Triton-style model config, and ``infer`` with
Triton's binary tensor data extension (JSON header, then raw tensor bytes) and gzip or
deflate request bodies, so ``tritonclient[http]`` works unchanged. Inference goes
through :class:`ServedModel`, the same batcher and metrics as every other API.

Errors on these routes have KServe's shape, ``{"error": "<message>"}``, not the
standard NOA body: the router carries its own exception handlers.

Model names may hold a ``/`` (``org/name``), so every ``/v2/models/...`` path is one
catch-all route whose tail is read here: the suffixes ``/ready``, ``/config``,
``/infer`` and ``/versions/<v>`` are taken off the end first. The one version of a
model is ``"1"``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import msgspec
from litestar import Request, Response, Router, get, post, route
from litestar.exceptions import HTTPException
from litestar.params import FromPath
from noa.builtin_plugins.inference.disconnect import client_gone
from noa.builtin_plugins.inference.errors import ClientGone
from noa.builtin_plugins.inference.kserve_wire import (
    HEADER_LENGTH,
    JSON,
    MODEL_VERSION,
    InferRequest,
    binary_output,
    bool_param,
    decoded_body,
    infer_response,
    split_body,
    tensor_inputs,
    timeout_ms_param,
)
from noa.builtin_plugins.inference.runtime import ModelRuntime, ServedModel
from noa.builtin_plugins.inference.tensors import OUTPUT, read_inputs
from noa.plugin_sdk.auth import RESOURCE_OPT
from noa.plugin_sdk.errors import ApiError, BadRequest, NotFound

__all__ = ["EXTENSIONS", "ModelPath", "kserve_error_body", "kserve_router", "parse_model_path"]

log = logging.getLogger("noa.inference")

#: Extensions reported in the server metadata: only those implemented here.
EXTENSIONS = ("binary_tensor_data", "model_configuration")
# Bound on a decompressed body when the HTTP core sets no raw body limit.
_FALLBACK_LIMIT = 64 * 1024 * 1024
_ACTIONS = ("ready", "config", "infer")
# What the metadata and config declare: (name, datatype, shape) of each input.
_INPUT_SPECS = (
    ("text", "BYTES", (-1,)),
    ("input_ids", "INT64", (-1, -1)),
    ("attention_mask", "INT64", (-1, -1)),
)


class ServerMetadata(msgspec.Struct, kw_only=True):
    name: str
    version: str
    extensions: list[str]


class ServerLive(msgspec.Struct, kw_only=True):
    live: bool


class ServerReady(msgspec.Struct, kw_only=True):
    ready: bool


class ModelPath(msgspec.Struct, frozen=True):
    model: str
    version: str | None
    # "" (metadata), "ready", "config" or "infer"
    action: str


def parse_model_path(tail: str) -> ModelPath:
    """``org/name/versions/1/ready`` -> model ``org/name``, version ``1``, ``ready``.

    The action suffix is read first, then ``versions/<v>``; what is left is the model
    name. A model literally named ``x/ready`` is reached as ``x/ready/versions/1``.
    """
    parts = tail.strip("/").split("/")
    action = ""
    if len(parts) > 1 and parts[-1] in _ACTIONS:
        action = parts.pop()
    found_version: str | None = None
    if len(parts) > 2 and parts[-2] == "versions":
        found_version = parts.pop()
        parts.pop()
    return ModelPath("/".join(parts), found_version, action)


def model_resource(params: dict[str, Any]) -> str:
    """The resource a ``/v2/models/...`` request touches, for capability tokens."""
    return f"model:{parse_model_path(params['tail']).model}"


# -- errors in KServe's shape -----------------------------------------------------------


def kserve_error_body(status: int, message: str) -> bytes:
    """KServe's error shape, ``{"error": "<message>"}`` (also for the HTTP core's own
    503 and 504 on these routes)."""
    return msgspec.json.encode({"error": message})


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response[bytes]:
    return Response(
        content=kserve_error_body(status, message),
        status_code=status,
        media_type=JSON,
        headers=dict(headers or {}),
    )


def _api_error(request: Request[Any, Any, Any], exc: ApiError) -> Response[bytes]:
    if exc.status_code >= 500:
        log.warning("%s answered %d: %s", request.url.path, exc.status_code, exc.message)
    return _error(exc.status_code, exc.message, exc.headers)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    message = "internal server error" if status >= 500 else (exc.detail.strip() or "error")
    return _error(status, message, exc.headers)


def _client_gone(request: Request[Any, Any, Any], exc: ClientGone) -> Response[bytes]:
    # Nobody reads this answer; 499 keeps it apart from real failures in access logs.
    log.debug("%s: %s", request.url.path, exc)
    return _error(499, str(exc))


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.error(
        "unhandled error in %s %s",
        request.method,
        request.url.path,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return _error(500, "internal server error")


def _exception_handlers() -> dict[type[Exception] | int, Callable[..., Response[bytes]]]:
    return {
        ApiError: _api_error,
        HTTPException: _http_error,
        ClientGone: _client_gone,
        Exception: _internal_error,
    }


# -- request bodies ---------------------------------------------------------------------


def _triton_type(datatype: str) -> str:
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def _model_metadata(runtime: ModelRuntime, served: ServedModel) -> dict[str, Any]:
    return {
        "name": served.name,
        "versions": [MODEL_VERSION],
        "platform": _platform(runtime, served.name),
        "inputs": [{"name": n, "datatype": t, "shape": list(s)} for n, t, s in _INPUT_SPECS],
        "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, served.dimension]}],
    }


def _model_config(runtime: ModelRuntime, served: ServedModel) -> dict[str, Any]:
    """Triton's model configuration (its JSON form). ``max_batch_size`` 0 means dims
    are full shapes: batching happens across requests, in the server's batcher. Every
    input is optional: a request sends ``text`` or ``input_ids``."""
    settings = {
        "dimension": served.dimension,
        "max_length": served.max_length,
        "normalize": str(served.model_normalizes).lower(),
        "device": served.device,
    }
    return {
        "name": served.name,
        "platform": _platform(runtime, served.name),
        "backend": "noa",
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": 0,
        "input": [
            {"name": n, "data_type": _triton_type(t), "dims": list(s), "optional": True}
            for n, t, s in _INPUT_SPECS
        ],
        "output": [{"name": OUTPUT, "data_type": "TYPE_FP32", "dims": [-1, served.dimension]}],
        "parameters": {key: {"string_value": str(value)} for key, value in settings.items()},
    }


def _platform(runtime: ModelRuntime, name: str) -> str:
    return f"noa_{runtime.status(name).family or 'unknown'}"


def _check_version(path: ModelPath) -> None:
    if path.version is not None and path.version != MODEL_VERSION:
        raise NotFound(
            f"model {path.model!r} has no version {path.version!r} (versions: {MODEL_VERSION})",
            code="model_version_not_found",
        )


def _server_ready(runtime: ModelRuntime) -> bool:
    """Every model config asks to load is ready (a failed or missing one is not)."""
    if not runtime.started:
        return False
    load = runtime.config.load
    wanted = runtime.repository.names() if "*" in load else list(load)
    ready = {s.name for s in runtime.statuses() if s.state == "ready"}
    return all(name in ready for name in wanted)


def _body_limit(request: Request[Any, Any, Any]) -> int:
    limit = request.route_handler.resolve_request_max_body_size()
    return limit if limit else _FALLBACK_LIMIT


def _server_version() -> str:
    try:
        return version("noa-kernel")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"


# -- routes -----------------------------------------------------------------------------


def kserve_router(runtime: ModelRuntime) -> Router:
    """The ``/v2`` router: health, metadata, model config and infer, KServe errors."""
    metadata = ServerMetadata(name="noa", version=_server_version(), extensions=[*EXTENSIONS])

    @get("/", summary="Server metadata", sync_to_thread=False)
    def server_metadata() -> ServerMetadata:
        """The server's name, version and the protocol extensions it implements."""
        return metadata

    @get("/health/live", summary="Server liveness", sync_to_thread=False)
    def live() -> ServerLive:
        """200 while the server answers at all."""
        return ServerLive(live=True)

    @get("/health/ready", summary="Server readiness", sync_to_thread=False)
    def ready() -> Response[ServerReady]:
        """200 when every model the config loads at start-up is ready; 503 while one is
        loading, or when one failed to load."""
        ok = _server_ready(runtime)
        return Response(ServerReady(ready=ok), status_code=200 if ok else 503)

    @get(
        "/models/{tail:path}",
        summary="Model metadata, readiness or config",
        sync_to_thread=False,
        opt={RESOURCE_OPT: model_resource},
    )
    def model_get(tail: FromPath[str]) -> Response[bytes]:
        """``/v2/models/<name>[/versions/1]`` answers the model's metadata (inputs,
        outputs, platform); ``.../ready`` 200 or 503 with ``{"name", "ready"}``;
        ``.../config`` a Triton model configuration. Unknown models answer 404; a
        model that is not loaded answers 503 except on ``ready``."""
        path = parse_model_path(tail)
        if path.action == "infer":
            raise ApiError(
                "inference takes POST, not GET", status_code=405, headers={"Allow": "POST"}
            )
        _check_version(path)
        if path.action == "ready":
            ok = runtime.status(path.model).state == "ready"
            body = msgspec.json.encode({"name": path.model, "ready": ok})
            return Response(body, status_code=200 if ok else 503, media_type=JSON)
        served = runtime.get(path.model)
        if path.action == "config":
            return Response(msgspec.json.encode(_model_config(runtime, served)), media_type=JSON)
        return Response(msgspec.json.encode(_model_metadata(runtime, served)), media_type=JSON)

    @post(
        "/models/{tail:path}",
        summary="Run inference",
        status_code=200,
        opt={RESOURCE_OPT: model_resource},
    )
    async def model_infer(tail: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
        """``/v2/models/<name>[/versions/1]/infer``: the Open Inference Protocol request.

        Inputs: ``text`` (BYTES, shape ``[n]`` or ``[n, 1]``) or ``input_ids``
        (INT32/INT64, ``[n, length]``) with an optional ``attention_mask``. Output:
        ``embedding`` (FP32, ``[n, dimension]``). Request parameters ``normalize``,
        ``truncate`` (default true), ``timeout_ms`` (or Triton's ``timeout`` in µs) and
        ``binary_data_output``.

        Binary tensor data: with ``Inference-Header-Content-Length: N`` the first N
        bytes are the JSON request and the rest holds the data of the inputs that carry
        ``binary_data_size``, in order. An output asked for with ``binary_data: true``
        comes back the same way (``application/octet-stream``). Request bodies may be
        gzip or deflate compressed (``Content-Encoding``).
        """
        path = parse_model_path(tail)
        if path.action != "infer":
            raise NotFound(f"no KServe v2 route POST {request.url.path}; POST .../infer")
        _check_version(path)
        served = runtime.get(path.model)
        body = decoded_body(
            await request.body(), request.headers.get("content-encoding"), _body_limit(request)
        )
        header, binary = split_body(body, request.headers.get(HEADER_LENGTH))
        try:
            infer_request = msgspec.json.decode(header, type=InferRequest)
        except msgspec.DecodeError as exc:
            raise BadRequest(f"malformed inference request: {exc}") from None
        inputs = tensor_inputs(infer_request, binary)
        params = infer_request.parameters or {}
        truncate = bool(bool_param(params, "truncate", True))
        normalize = bool_param(params, "normalize", None)
        timeout_ms = timeout_ms_param(params)
        wants_binary = binary_output(infer_request)
        texts, tokens = read_inputs(
            inputs,
            max_length=served.max_length,
            vocab_size=served.vocab_size,
            truncate=truncate,
        )
        async with client_gone(request.receive) as gone:
            if texts is not None:
                result = await served.embed(
                    texts,
                    normalize=normalize,
                    truncate=truncate,
                    timeout_ms=timeout_ms,
                    cancelled=gone,
                    param="text",
                )
            else:
                assert tokens is not None
                result = await served.embed_tokens(
                    tokens, normalize=normalize, timeout_ms=timeout_ms, cancelled=gone
                )
        return infer_response(served, infer_request, result, wants_binary)

    @route("/{tail:path}", http_method=["GET", "POST"], include_in_schema=False)
    async def unknown(tail: FromPath[str], request: Request[Any, Any, Any]) -> None:
        raise NotFound(f"no KServe v2 route {request.method} /v2{tail}")

    return Router(
        path="/v2",
        route_handlers=[server_metadata, live, ready, model_get, model_infer, unknown],
        tags=["kserve-v2"],
        exception_handlers=_exception_handlers(),
    )
