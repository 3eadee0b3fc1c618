"""The standard error body, and Litestar exception handlers that produce it.

Every 4xx and 5xx is ``{"error": {"message", "type", "code", "param", "request_id",
"details"}}``, a superset of OpenAI's error object. A server fault answers 500 with a
generic message; the traceback goes to the log with the request id, never to the client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from noa.plugin_sdk.errors import ApiError

__all__ = ["error_body", "error_response", "exception_handlers", "request_id_of"]

log = logging.getLogger("noa.http")

_TYPES = {
    400: ("invalid_request_error", "bad_request"),
    401: ("authentication_error", "unauthenticated"),
    403: ("permission_error", "forbidden"),
    404: ("not_found_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    406: ("invalid_request_error", "not_acceptable"),
    408: ("timeout_error", "request_timeout"),
    409: ("conflict_error", "conflict"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
    422: ("invalid_request_error", "unprocessable"),
    429: ("rate_limit_error", "rate_limited"),
    503: ("service_unavailable", "unavailable"),
    504: ("timeout_error", "timeout"),
}


def default_type(status: int) -> tuple[str, str]:
    if status in _TYPES:
        return _TYPES[status]
    return (
        ("invalid_request_error", "bad_request")
        if status < 500
        else ("server_error", "internal_error")
    )


def error_body(
    status: int,
    message: str,
    *,
    request_id: str | None,
    type_: str | None = None,
    code: str | None = None,
    param: str | None = None,
    details: Mapping[str, Any] | Sequence[Any] | None = None,
) -> bytes:
    fallback_type, fallback_code = default_type(status)
    return msgspec.json.encode(
        {
            "error": {
                "message": message,
                "type": type_ or fallback_type,
                "code": code or fallback_code,
                "param": param,
                "request_id": request_id,
                "details": details,
            }
        }
    )


def request_id_of(request: Request[Any, Any, Any]) -> str | None:
    state = request.scope.get("state") or {}
    value = state.get("request_id")
    return value if isinstance(value, str) else None


def error_response(
    status: int, body: bytes, headers: Mapping[str, str] | None = None
) -> Response[bytes]:
    return Response(
        content=body, status_code=status, media_type="application/json", headers=dict(headers or {})
    )


def _api_error(request: Request[Any, Any, Any], exc: ApiError) -> Response[bytes]:
    body = error_body(
        exc.status_code,
        exc.message,
        request_id=request_id_of(request),
        type_=exc.error_type,
        code=exc.code,
        param=exc.param,
        details=exc.details,
    )
    if exc.status_code >= 500:
        log.warning("%s answered %d: %s", request.url.path, exc.status_code, exc.message)
    return error_response(exc.status_code, body, exc.headers)


def _validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[bytes]:
    extra = exc.extra if isinstance(exc.extra, list) else []
    param = None
    message = _clean(exc.detail) or "the request is invalid"
    if extra and isinstance(extra[0], dict):
        param = extra[0].get("key")
        # Name the first offending field in the message itself: most clients show only it.
        message = f"{message}: {param}: {extra[0].get('message')}"
    body = error_body(
        400,
        message,
        request_id=request_id_of(request),
        code="validation_error",
        param=param,
        details=extra or None,
    )
    return error_response(400, body)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    message = _clean(exc.detail) or "error"
    if status >= 500:
        message = "internal server error"
    details = exc.extra if isinstance(exc.extra, (dict, list)) and status < 500 else None
    body = error_body(status, message, request_id=request_id_of(request), details=details)
    return error_response(status, body, exc.headers)


def _too_deep(request: Request[Any, Any, Any], exc: RecursionError) -> Response[bytes]:
    # Raised by a decoder (msgspec stops near 1,000 levels) on a body nested too deeply
    # that the HTTP core's own depth check did not see (a compressed body, say).
    body = error_body(
        400,
        "the request body nests too deeply to decode",
        request_id=request_id_of(request),
        code="json_too_deep",
    )
    return error_response(400, body)


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    rid = request_id_of(request)
    log.error(
        "unhandled error in %s %s (request_id=%s)",
        request.method,
        request.url.path,
        rid,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    body = error_body(500, "internal server error", request_id=rid)
    return error_response(500, body)


def _clean(detail: str) -> str:
    # Litestar prefixes some details with the status phrase already in the status line.
    return detail.strip()


def exception_handlers() -> dict[type[Exception] | int, Any]:
    return {
        ApiError: _api_error,
        ValidationException: _validation_error,
        HTTPException: _http_error,
        RecursionError: _too_deep,
        Exception: _internal_error,
    }
