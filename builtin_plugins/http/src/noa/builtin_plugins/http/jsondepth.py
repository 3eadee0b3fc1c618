"""The JSON nesting limit, checked on the raw body before anything decodes it.

msgspec gives up near 1,000 levels with a ``RecursionError`` (a 500 if left alone), and
far shallower documents can already cost a validator dearly. ``NoaRequest`` checks the
body of every JSON request once, when it is first read: strings are cut out with one
regular expression, the brackets left are counted, and a body nested deeper than
``http.max_json_depth`` is a 400 naming the limit. About 1 µs for a small body.
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Any

from litestar import Request
from noa.plugin_sdk.errors import BadRequest

__all__ = ["NoaRequest", "json_depth", "request_class"]

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_depth(body: bytes) -> int:
    """How deeply ``body`` nests arrays and objects (0 for a scalar). Malformed JSON
    gives some number; the decoder rejects it afterwards."""
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    return max(0, max(accumulate(_STEP[b] for b in brackets)))


class NoaRequest(Request[Any, Any, Any]):
    """Litestar's request with the JSON depth limit applied to the body."""

    max_json_depth = 64

    async def body(self) -> bytes:
        body = await super().body()
        if self.scope.get("noa_json_depth_checked"):
            return body
        self.scope["noa_json_depth_checked"] = True  # type: ignore[typeddict-unknown-key]
        headers = self.headers
        # A body shallower than the limit has fewer brackets than that: skip the scan.
        # Compressed bodies and the Open Inference Protocol's JSON-plus-binary bodies are
        # not plain JSON text; their decoders' depth errors answer 400 (errors.py).
        if (
            len(body) > self.max_json_depth
            and "json" in headers.get("content-type", "")
            and "content-encoding" not in headers
            and "inference-header-content-length" not in headers
        ):
            depth = json_depth(body)
            if depth > self.max_json_depth:
                raise BadRequest(
                    f"the JSON body nests {depth} levels deep; the limit is "
                    f"{self.max_json_depth} (http.max_json_depth)",
                    code="json_too_deep",
                )
        return body


def request_class(max_depth: int) -> type[NoaRequest]:
    return type("NoaRequest", (NoaRequest,), {"max_json_depth": max_depth})
