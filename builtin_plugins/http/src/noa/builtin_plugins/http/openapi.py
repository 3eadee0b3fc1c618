"""The OpenAPI document says what errors really look like.

Litestar documents its own error body (``status_code``, ``detail``, ``extra``) for the
400s it adds; NOA answers every 4xx and 5xx with the standard error shape, so every
error response of every operation points at one ``Error`` component instead.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Reference, Schema

__all__ = ["document_standard_errors"]

_NULLABLE_STRING = Schema(one_of=[Schema(type=OpenAPIType.STRING), Schema(type=OpenAPIType.NULL)])

ERROR_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    description="The standard error body (a superset of OpenAI's error object).",
    required=["error"],
    properties={
        "error": Schema(
            type=OpenAPIType.OBJECT,
            required=["message", "type", "code", "param", "request_id", "details"],
            properties={
                "message": Schema(type=OpenAPIType.STRING),
                "type": Schema(type=OpenAPIType.STRING),
                "code": Schema(type=OpenAPIType.STRING),
                "param": _NULLABLE_STRING,
                "request_id": _NULLABLE_STRING,
                "details": Schema(description="Anything that helps: the failing fields ..."),
            },
        )
    },
)

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def document_standard_errors(app: Litestar) -> None:
    openapi = app.openapi_schema
    if openapi.components.schemas is None:
        openapi.components.schemas = {}
    openapi.components.schemas["Error"] = ERROR_SCHEMA
    content = {
        "application/json": OpenAPIMediaType(schema=Reference(ref="#/components/schemas/Error"))
    }
    for path_item in (openapi.paths or {}).values():
        for method in _METHODS:
            operation = getattr(path_item, method, None)
            if operation is None or not operation.responses:
                continue
            for status, response in operation.responses.items():
                if status[:1] in ("4", "5") and isinstance(response, OpenAPIResponse):
                    response.content = dict(content)
