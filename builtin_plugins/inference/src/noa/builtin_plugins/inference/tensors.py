"""Named tensors in and out: the shared validation of ``/v1/infer`` and KServe v2.

A text-embedding model takes either ``text`` (BYTES, shape ``[n]``: one string per
input) or ``input_ids`` (INT32/INT64, shape ``[n, length]``, ids of the model's own
vocabulary; an optional ``attention_mask`` of the same shape marks the real tokens),
and answers ``embedding`` (FP32, shape ``[n, dimension]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from noa.builtin_plugins.inference.text import Tokenized
from noa.plugin_sdk.errors import BadRequest, Unprocessable

__all__ = ["INPUTS", "OUTPUT", "TensorInput", "read_inputs"]

OUTPUT = "embedding"
INPUTS = ("text", "input_ids", "attention_mask")
_INT_TYPES = {"INT32", "INT64", "UINT32", "UINT64", "INT16", "UINT16", "INT8", "UINT8"}


class TensorInput:
    """One named input tensor as a client sent it (data flat, row-major)."""

    __slots__ = ("data", "datatype", "name", "shape")

    def __init__(self, name: str, datatype: str, shape: Sequence[int], data: Any) -> None:
        self.name = name
        self.datatype = datatype.upper()
        self.shape = list(shape)
        self.data = data


def _count(shape: list[int], name: str) -> int:
    if any((not isinstance(d, int)) or d < 0 for d in shape):
        raise BadRequest(f"input {name!r} has an invalid shape {shape}", param=name)
    total = 1
    for d in shape:
        total *= d
    return total


def read_inputs(
    inputs: Sequence[TensorInput], *, max_length: int, vocab_size: int, truncate: bool
) -> tuple[list[str], None] | tuple[None, list[Tokenized]]:
    """Either the texts or the token ids the request carries, validated.

    Raises 400 for a malformed tensor (shape and data disagree, wrong datatype) and 422
    for a request this model cannot take (unknown input name, ids out of vocabulary).
    """
    by_name: dict[str, TensorInput] = {}
    for tensor in inputs:
        if tensor.name not in INPUTS:
            raise Unprocessable(
                f"unknown input {tensor.name!r}; this model takes 'text' (BYTES) or "
                "'input_ids' (INT32/INT64) with an optional 'attention_mask'",
                code="unknown_input",
                param=tensor.name,
            )
        if tensor.name in by_name:
            raise BadRequest(f"input {tensor.name!r} is given twice", param=tensor.name)
        by_name[tensor.name] = tensor
    if ("text" in by_name) == ("input_ids" in by_name):
        raise Unprocessable(
            "send exactly one of the inputs 'text' and 'input_ids'", code="missing_input"
        )
    if "text" in by_name:
        return _texts(by_name["text"]), None
    return None, _token_ids(
        by_name["input_ids"], by_name.get("attention_mask"), max_length, vocab_size, truncate
    )


def _texts(tensor: TensorInput) -> list[str]:
    if tensor.datatype != "BYTES":
        raise BadRequest(
            f"input 'text' must have datatype BYTES, not {tensor.datatype}", param="text"
        )
    if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
        raise BadRequest(
            f"input 'text' must have shape [n] or [n, 1], not {tensor.shape}", param="text"
        )
    count = _count(tensor.shape, "text")
    data = tensor.data
    if not isinstance(data, list) or len(data) != count:
        got = len(data) if isinstance(data, list) else type(data).__name__
        raise BadRequest(
            f"input 'text' has shape {tensor.shape} ({count} elements) but {got} data items",
            param="text",
        )
    texts: list[str] = []
    for index, item in enumerate(data):
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(
                    f"input 'text' element {index} is not valid UTF-8", param="text"
                ) from None
        if not isinstance(item, str):
            raise BadRequest(f"input 'text' element {index} is not a string", param="text")
        texts.append(item)
    return texts


def _int_matrix(tensor: TensorInput) -> np.ndarray[Any, Any]:
    if tensor.datatype not in _INT_TYPES:
        raise BadRequest(
            f"input {tensor.name!r} must have an integer datatype (INT32, INT64), "
            f"not {tensor.datatype}",
            param=tensor.name,
        )
    if len(tensor.shape) != 2:
        raise BadRequest(
            f"input {tensor.name!r} must have shape [n, length], not {tensor.shape}",
            param=tensor.name,
        )
    count = _count(tensor.shape, tensor.name)
    data = tensor.data
    if isinstance(data, np.ndarray):
        flat = data.reshape(-1)
    else:
        flat_list = _flatten(data)
        if flat_list is None or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in flat_list
        ):
            raise BadRequest(f"input {tensor.name!r} must hold integers", param=tensor.name)
        flat = np.asarray(flat_list, dtype=np.int64)
    if flat.size != count:
        raise BadRequest(
            f"input {tensor.name!r} has shape {tensor.shape} ({count} elements) but "
            f"{flat.size} data items",
            param=tensor.name,
        )
    return flat.reshape(tensor.shape)


def _flatten(data: Any) -> list[Any] | None:
    if not isinstance(data, list):
        return None
    if data and isinstance(data[0], list):
        out: list[Any] = []
        for row in data:
            if not isinstance(row, list):
                return None
            out.extend(row)
        return out
    return data


def _token_ids(
    ids_tensor: TensorInput,
    mask_tensor: TensorInput | None,
    max_length: int,
    vocab_size: int,
    truncate: bool,
) -> list[Tokenized]:
    ids = _int_matrix(ids_tensor)
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise Unprocessable(
            f"input 'input_ids' holds ids outside this model's vocabulary [0, {vocab_size})",
            code="token_out_of_vocabulary",
            param="input_ids",
        )
    mask = None
    if mask_tensor is not None:
        mask = _int_matrix(mask_tensor)
        if mask.shape != ids.shape:
            raise BadRequest(
                f"input 'attention_mask' has shape {list(mask.shape)}, not that of "
                f"'input_ids' {list(ids.shape)}",
                param="attention_mask",
            )
    out: list[Tokenized] = []
    for row in range(ids.shape[0]):
        length = int(np.count_nonzero(mask[row])) if mask is not None else ids.shape[1]
        tokens = [int(t) for t in ids[row, :length]]
        cut = len(tokens) > max_length
        if cut:
            if not truncate:
                raise BadRequest(
                    f"input 'input_ids' row {row} has {len(tokens)} tokens; the model "
                    f"takes at most {max_length} (or ask for truncation)",
                    code="input_too_long",
                    param="input_ids",
                )
            tokens = tokens[:max_length]
        if not tokens:
            raise BadRequest(f"input 'input_ids' row {row} has no tokens", param="input_ids")
        out.append(Tokenized(tokens, cut))
    return out
