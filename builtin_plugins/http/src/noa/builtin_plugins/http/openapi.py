"""The OpenAPI document says what errors and credentials really look like.

Litestar documents its own error body (``status_code``, ``detail``, ``extra``) for the
400s it adds; NOA answers every 4xx and 5xx with the standard error shape, so every
error response of every operation points at one ``Error`` component instead.

Every operation that is not public lists the credentials it takes (``bearer``: a JWT,
an API key or a capability token; ``apiKey``: the ``X-API-Key`` header), the scope it
needs (in its description) and the 401, 403 and 429 it may answer.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Reference,
    Schema,
    SecurityScheme,
)
from noa.builtin_plugins.http.access import PUBLIC_OPT
from noa.plugin_sdk.auth import ANY_SCOPE, SCOPE_OPT

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

SECURITY_SCHEMES: dict[str, SecurityScheme | Reference] = {
    "bearer": SecurityScheme(
        type="http",
        scheme="bearer",
        description="A JWT from a trusted issuer, an API key (noa_sk_...) or a capability "
        "token (noacap1...): see docs/security.md.",
    ),
    "apiKey": SecurityScheme(
        type="apiKey", name="X-API-Key", security_scheme_in="header", description="An API key."
    ),
}
_GUARDED = {
    "401": "No valid credentials: missing, malformed, expired, revoked or unknown.",
    "403": "The credentials do not grant the scope (or resource) this operation needs.",
    "429": "Rate limit or daily quota exceeded; see Retry-After and RateLimit-* headers.",
}


def _guarded_operations(app: Litestar) -> dict[tuple[str, str], str]:
    """``(path, method) -> scope`` of every operation that needs credentials."""
    guarded: dict[tuple[str, str], str] = {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            if not isinstance(handler, HTTPRouteHandler) or handler.opt.get(PUBLIC_OPT):
                continue
            for method in handler.http_methods:
                scope = handler.opt.get(SCOPE_OPT, ANY_SCOPE)
                guarded[(route.path_format, method.lower())] = scope
    return guarded


def document_standard_errors(app: Litestar) -> None:
    openapi = app.openapi_schema
    if openapi.components.schemas is None:
        openapi.components.schemas = {}
    openapi.components.schemas["Error"] = ERROR_SCHEMA
    openapi.components.security_schemes = dict(SECURITY_SCHEMES)
    content = {
        "application/json": OpenAPIMediaType(schema=Reference(ref="#/components/schemas/Error"))
    }
    guarded = _guarded_operations(app)
    for path, path_item in (openapi.paths or {}).items():
        for method in _METHODS:
            operation = getattr(path_item, method, None)
            if operation is None:
                continue
            scope = guarded.get((path, method))
            if scope is not None:
                operation.security = [{"bearer": []}, {"apiKey": []}]
                needs = "any scope ('*')" if scope == ANY_SCOPE else f"the scope `{scope}`"
                note = f"Needs {needs}."
                operation.description = (
                    f"{operation.description}\n\n{note}".strip() if operation.description else note
                )
                responses: dict[str, Any] = dict(operation.responses or {})
                for status, text in _GUARDED.items():
                    responses.setdefault(status, OpenAPIResponse(description=text))
                operation.responses = responses
            if not operation.responses:
                continue
            for status, response in operation.responses.items():
                if status[:1] in ("4", "5") and isinstance(response, OpenAPIResponse):
                    response.content = dict(content)
