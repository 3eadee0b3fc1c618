"""The one exception tree of NOA. Every error a plugin raises on purpose fits here.

::

    NoaError
    ├── ConfigError             a config value is invalid (key, value, layer)
    ├── PluginError             something a named plugin did went wrong
    │   ├── PluginLoadError     importing or registering the plugin failed
    │   └── PluginStartError    its startup hook raised
    ├── DriverLoadError         a driver slot could not load the driver asked for
    ├── RegistrationError       a registrar refused a contribution (duplicate, bad value)
    └── ApiError                a client's mistake or a refusal, answered as a 4xx/5xx
        ├── BadRequest          400
        ├── NotFound            404
        ├── Conflict            409
        ├── PayloadTooLarge     413
        ├── Unprocessable       422
        ├── TooManyRequests     429
        ├── ServiceUnavailable  503
        └── GatewayTimeout      504

``ApiError`` carries everything the standard error body needs; the HTTP core turns it
into ``{"error": {"message", "type", "code", "param", "request_id", "details"}}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

__all__ = [
    "ApiError",
    "BadRequest",
    "ConfigError",
    "Conflict",
    "DriverLoadError",
    "Forbidden",
    "GatewayTimeout",
    "NoaError",
    "NotFound",
    "PayloadTooLarge",
    "PluginError",
    "PluginLoadError",
    "PluginStartError",
    "RegistrationError",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "Unprocessable",
]


class NoaError(Exception):
    """Base of every error NOA raises on purpose."""


class ConfigError(NoaError):
    """A config value is invalid. Names the key, the value and the layer it came from."""

    def __init__(self, key: str, value: object, layer: str, reason: str) -> None:
        self.key = key
        self.value = value
        self.layer = layer
        self.reason = reason
        super().__init__(f"config key {key!r} = {value!r} (from {layer}): {reason}")


class PluginError(NoaError):
    """Something the plugin named ``plugin`` did went wrong."""

    def __init__(self, plugin: str, message: str) -> None:
        self.plugin = plugin
        super().__init__(f"plugin {plugin!r}: {message}")


class PluginLoadError(PluginError):
    """Importing or registering a plugin failed."""


class PluginStartError(PluginError):
    """A plugin's startup hook raised."""


class DriverLoadError(NoaError):
    """A driver slot could not load the driver that config asked for."""

    def __init__(self, slot: str, name: str, available: Sequence[str], cause: str = "") -> None:
        self.slot = slot
        self.name = name
        self.available = tuple(available)
        names = ", ".join(self.available) or "none installed"
        detail = f": {cause}" if cause else ""
        super().__init__(
            f"driver slot {slot!r} cannot load driver {name!r} (config key drivers.{slot})"
            f"{detail} (available: {names})"
        )


class RegistrationError(NoaError):
    """A registrar refused a contribution: a duplicate name or an invalid value."""


class ApiError(NoaError):
    """An error answered to a client in the standard error shape.

    ``type`` is the broad class (``invalid_request_error``, ``not_found_error`` ...),
    ``code`` a stable machine-readable code, ``param`` the offending input field.
    """

    status_code: int = 500
    error_type: ClassVar[str] = "server_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        details: Mapping[str, Any] | Sequence[Any] | None = None,
        headers: Mapping[str, str] | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.details = details
        self.headers = dict(headers or {})
        if status_code is not None:
            self.status_code = status_code


class BadRequest(ApiError):
    status_code = 400
    error_type = "invalid_request_error"


class Unauthorized(ApiError):
    """No valid credentials: missing, malformed, expired, revoked or unknown (401)."""

    status_code = 401
    error_type = "authentication_error"


class Forbidden(ApiError):
    """Valid credentials that do not grant what the request needs (403)."""

    status_code = 403
    error_type = "permission_error"


class NotFound(ApiError):
    status_code = 404
    error_type = "not_found_error"


class Conflict(ApiError):
    status_code = 409
    error_type = "conflict_error"


class PayloadTooLarge(ApiError):
    status_code = 413
    error_type = "invalid_request_error"


class Unprocessable(ApiError):
    status_code = 422
    error_type = "invalid_request_error"


class TooManyRequests(ApiError):
    status_code = 429
    error_type = "rate_limit_error"


class ServiceUnavailable(ApiError):
    status_code = 503
    error_type = "service_unavailable"


class GatewayTimeout(ApiError):
    """The work a request asked for did not finish within its time limit."""

    status_code = 504
    error_type = "timeout_error"
