"""The wire format of KServe v2 ``infer``: JSON and Triton's binary tensor extension.

A request body may be gzip or deflate compressed (inflated up to the body limit), and
may carry raw tensor bytes after a JSON header of ``Inference-Header-Content-Length``
bytes; inputs with ``parameters.binary_data_size`` take their bytes from there in order
(BYTES tensors as 4-byte little-endian lengths, each followed by its bytes). Responses
are JSON, or JSON plus raw little-endian FP32 bytes when the client asks for binary
output. Every malformed body is a 400 (413 past the size limit), never a 500.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Mapping
from typing import Any

import msgspec
import numpy as np
from litestar import Response
from noa.builtin_plugins.inference.runtime import EmbedResult, ServedModel
from noa.builtin_plugins.inference.tensors import OUTPUT, TensorInput
from noa.plugin_sdk.errors import ApiError, BadRequest, PayloadTooLarge
from numpy.typing import NDArray

__all__ = [
    "HEADER_LENGTH",
    "JSON",
    "MODEL_VERSION",
    "InferRequest",
    "binary_output",
    "bool_param",
    "decoded_body",
    "infer_response",
    "split_body",
    "tensor_inputs",
    "timeout_ms_param",
]

MODEL_VERSION = "1"
HEADER_LENGTH = "inference-header-content-length"
JSON = "application/json"
# Little-endian numpy dtypes of the integer datatypes: INT8 -> <i1 ... UINT64 -> <u8.
_INT_DTYPES = {
    f"{sign}INT{bits}": f"<{code}{bits // 8}"
    for sign, code in (("", "i"), ("U", "u"))
    for bits in (8, 16, 32, 64)
}
_DIGITS = re.compile(r"^[0-9]{1,19}$")


# -- wire shapes ---------------------------------------------------------------------


class _RequestInput(msgspec.Struct, kw_only=True):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: Any = None


class _RequestOutput(msgspec.Struct, kw_only=True):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(msgspec.Struct, kw_only=True):
    inputs: list[_RequestInput]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[_RequestOutput] | None = None


def _inflate(data: bytes, coding: str, limit: int) -> bytes:
    """One gzip or deflate (zlib) stream, refused past ``limit`` bytes inflated."""
    inflater = zlib.decompressobj(31 if coding == "gzip" else 15)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"the request body is not valid {coding} data: {exc}") from None
    if len(out) > limit:
        raise PayloadTooLarge(
            f"the {coding} request body inflates to more than {limit} bytes",
            code="request_too_large",
        )
    if not inflater.eof:
        raise BadRequest(f"the {coding} request body is truncated")
    if inflater.unused_data:
        raise BadRequest(f"the {coding} request body has trailing bytes after its data")
    return out


def decoded_body(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    if not content_encoding:
        return body
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    # Codings are listed in the order they were applied; undo them last first.
    for coding in reversed(codings):
        if coding in ("", "identity"):
            continue
        if coding not in ("gzip", "x-gzip", "deflate"):
            raise ApiError(
                f"unsupported Content-Encoding {coding!r}; send gzip, deflate or identity",
                status_code=415,
            )
        body = _inflate(body, "gzip" if coding == "x-gzip" else coding, limit)
    return body


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """The JSON header and the binary tensor data that follows it."""
    if header_length is None:
        return body, memoryview(b"")
    value = header_length.strip()
    if not _DIGITS.match(value) or not 0 < int(value) <= len(body):
        raise BadRequest(
            f"Inference-Header-Content-Length is {header_length!r}; it must be the byte "
            f"length of the JSON header, between 1 and the body's {len(body)} bytes"
        )
    size = int(value)
    return body[:size], memoryview(body)[size:]


def _flat(data: Any) -> Any:
    """Nested JSON lists flattened row-major (iteratively: nesting depth is the
    client's choice); anything but a list is returned as is for validation to refuse."""
    if not isinstance(data, list) or not any(isinstance(item, list) for item in data):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _byte_strings(raw: memoryview, name: str) -> list[bytes]:
    """BYTES tensor data: each element a 4-byte little-endian length, then its bytes."""
    items: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BadRequest(
                f"input {name!r}: binary BYTES data ends inside an element's 4-byte length",
                param=name,
            )
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise BadRequest(
                f"input {name!r}: a BYTES element of {length} bytes overruns the "
                f"{len(raw)} bytes of binary data",
                param=name,
            )
        items.append(bytes(raw[offset : offset + length]))
        offset += length
    return items


def _binary_tensor(tensor: _RequestInput, raw: memoryview) -> Any:
    datatype = tensor.datatype.upper()
    if datatype == "BYTES":
        return _byte_strings(raw, tensor.name)
    dtype = _INT_DTYPES.get(datatype)
    if dtype is None:
        # Refused by datatype in read_inputs, which names what this model takes.
        return None
    itemsize = np.dtype(dtype).itemsize
    if len(raw) % itemsize:
        raise BadRequest(
            f"input {tensor.name!r}: {len(raw)} bytes of binary data is not a whole "
            f"number of {datatype} elements",
            param=tensor.name,
        )
    return np.frombuffer(raw, dtype=dtype)


def tensor_inputs(request: InferRequest, binary: memoryview) -> list[TensorInput]:
    """The request's inputs, their data taken from JSON or from the binary section."""
    out: list[TensorInput] = []
    offset = 0
    for tensor in request.inputs:
        params = tensor.parameters or {}
        if "shared_memory_region" in params:
            raise BadRequest(
                f"input {tensor.name!r}: shared memory is not supported; send the data "
                "in the request",
                param=tensor.name,
            )
        size = params.get("binary_data_size")
        if size is None:
            out.append(TensorInput(tensor.name, tensor.datatype, tensor.shape, _flat(tensor.data)))
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadRequest(
                f"input {tensor.name!r}: binary_data_size must be a non-negative integer, "
                f"not {size!r}",
                param=tensor.name,
            )
        if tensor.data is not None:
            raise BadRequest(
                f"input {tensor.name!r} has both JSON data and binary_data_size",
                param=tensor.name,
            )
        if offset + size > len(binary):
            raise BadRequest(
                f"input {tensor.name!r}: binary_data_size {size} overruns the binary data "
                f"({len(binary) - offset} bytes left of {len(binary)} after the JSON header)",
                param=tensor.name,
            )
        raw = binary[offset : offset + size]
        offset += size
        out.append(
            TensorInput(tensor.name, tensor.datatype, tensor.shape, _binary_tensor(tensor, raw))
        )
    if offset != len(binary):
        raise BadRequest(
            f"{len(binary) - offset} bytes of binary data after the JSON header belong to "
            "no input (check each input's binary_data_size)"
        )
    return out


# -- parameters -------------------------------------------------------------------------


def bool_param(params: Mapping[str, Any], key: str, default: bool | None) -> bool | None:
    value = params.get(key, default)
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f"parameter {key!r} must be a boolean, not {value!r}", param=key)
    return value


def timeout_ms_param(params: Mapping[str, Any]) -> float | None:
    # timeout_ms is NOA's; "timeout" is Triton's, in microseconds.
    for key, scale in (("timeout_ms", 1.0), ("timeout", 1e-3)):
        value = params.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise BadRequest(f"parameter {key!r} must be a positive number", param=key)
        return float(value) * scale
    return None


def binary_output(request: InferRequest) -> bool:
    """Whether ``embedding`` goes back as binary data (checks the requested outputs)."""
    default = bool_param(request.parameters or {}, "binary_data_output", False)
    wanted = bool(default)
    seen: set[str] = set()
    for output in request.outputs or ():
        if output.name != OUTPUT:
            raise BadRequest(
                f"unknown output {output.name!r}; this model answers only {OUTPUT!r}",
                param=output.name,
            )
        if output.name in seen:
            raise BadRequest(f"output {output.name!r} is requested twice", param=output.name)
        seen.add(output.name)
        params = output.parameters or {}
        for unsupported in ("classification", "shared_memory_region"):
            if unsupported in params:
                raise BadRequest(
                    f"output {output.name!r}: the {unsupported} parameter is not supported",
                    param=output.name,
                )
        own = bool_param(params, "binary_data", None)
        if own is not None:
            wanted = own
    return wanted


# -- responses --------------------------------------------------------------------------


def infer_response(
    served: ServedModel, request: InferRequest, result: EmbedResult, binary: bool
) -> Response[bytes]:
    vectors: NDArray[np.float32] = result.vectors
    output: dict[str, Any] = {"name": OUTPUT, "datatype": "FP32", "shape": list(vectors.shape)}
    header: dict[str, Any] = {"model_name": served.name, "model_version": MODEL_VERSION}
    if request.id is not None:
        header["id"] = request.id
    header["outputs"] = [output]
    if not binary:
        output["data"] = vectors.reshape(-1).tolist()
        return Response(content=msgspec.json.encode(header), media_type=JSON)
    data = np.ascontiguousarray(vectors, dtype="<f4").tobytes()
    output["parameters"] = {"binary_data_size": len(data)}
    head = msgspec.json.encode(header)
    return Response(
        content=head + data,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
