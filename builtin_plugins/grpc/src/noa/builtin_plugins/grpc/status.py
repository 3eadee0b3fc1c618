"""From NOA's exception tree to gRPC status codes.

A client's mistake is never UNKNOWN: every :class:`~noa.plugin_sdk.errors.ApiError`
maps by its HTTP status to the code that means the same, with its message. What is not
an ``ApiError`` is a bug: INTERNAL, with the request id, and logged.

=========================  ======================  ====================================
error                      HTTP                    gRPC
=========================  ======================  ====================================
BadRequest, Unprocessable  400, 422 (413, 415)     INVALID_ARGUMENT
Unauthorized               401                     UNAUTHENTICATED
Forbidden                  403                     PERMISSION_DENIED
NotFound                   404                     NOT_FOUND
Conflict                   409                     ALREADY_EXISTS (a name taken),
                                                   FAILED_PRECONDITION (a state)
TooManyRequests            429                     RESOURCE_EXHAUSTED
ServiceUnavailable         503                     UNAVAILABLE
GatewayTimeout, timeouts   504                     DEADLINE_EXCEEDED
=========================  ======================  ====================================
"""

from __future__ import annotations

import grpc
import msgspec
from noa.plugin_sdk.errors import ApiError

__all__ = ["status_of"]

_BY_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
# Conflict codes that mean "that name or key is taken" rather than "not in that state".
_TAKEN = ("exists", "taken", "unique_violation", "idempotency")


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The status and message for an error a servicer raised on purpose, or ``None``
    for anything else (an internal error)."""
    if isinstance(exc, ApiError):
        status = exc.status_code
        if status == 409:
            code = exc.code or ""
            taken = any(word in code for word in _TAKEN)
            return (
                grpc.StatusCode.ALREADY_EXISTS if taken else grpc.StatusCode.FAILED_PRECONDITION,
                exc.message,
            )
        found = _BY_HTTP.get(status)
        if found is None:
            found = (
                grpc.StatusCode.FAILED_PRECONDITION if status < 500 else grpc.StatusCode.INTERNAL
            )
        return found, exc.message
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, "the call ran past its deadline"
    if isinstance(exc, msgspec.ValidationError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    return None
