"""The ``[http]`` config section."""

from __future__ import annotations

from typing import Annotated

import msgspec
from noa.plugin_sdk import PluginConfig

__all__ = ["HttpConfig"]


class HttpConfig(PluginConfig, frozen=True):
    """Limits and documentation of the HTTP API.

    ``max_in_flight`` bounds requests being handled at once in one worker; past it the
    server answers 503 with ``Retry-After`` at once (probe routes are exempt).
    """

    max_body_bytes: Annotated[int, msgspec.Meta(ge=0)] = 1_048_576
    request_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    max_in_flight: Annotated[int, msgspec.Meta(ge=1)] = 512
    # Server-Sent Event streams one worker keeps open past request_timeout_s without
    # holding an in-flight slot; beyond this a stream counts as a request and ends at
    # the timeout (its client reconnects). 0: every stream is a request.
    max_event_streams: Annotated[int, msgspec.Meta(ge=0)] = 1000
    retry_after_s: Annotated[int, msgspec.Meta(ge=0)] = 1
    # Deepest nesting of arrays and objects accepted in a JSON body (400 beyond).
    max_json_depth: Annotated[int, msgspec.Meta(ge=1, le=512)] = 64
    openapi: bool = True
    # The OpenAPI document and its pages under /schema answer without credentials
    # (false: they need the "docs:read" scope).
    openapi_public: bool = True
    title: str = "NOA Unified Server"
    # Hardening headers on every response (nosniff, no framing, no referrer, a
    # Content-Security-Policy that loads nothing, except on the /schema docs pages).
    security_headers: bool = True
    # Strict-Transport-Security max-age, sent only on requests that came over HTTPS.
    hsts_max_age_s: Annotated[int, msgspec.Meta(ge=0)] = 31_536_000
    # CORS: origins allowed to call the API from a browser (["*"] for any); empty: off.
    cors_allow_origins: tuple[str, ...] = ()
    cors_allow_methods: tuple[str, ...] = ("GET", "POST", "PUT", "PATCH", "DELETE")
    cors_allow_headers: tuple[str, ...] = ("authorization", "content-type", "x-request-id")
    cors_allow_credentials: bool = False
    cors_max_age_s: Annotated[int, msgspec.Meta(ge=0)] = 600
