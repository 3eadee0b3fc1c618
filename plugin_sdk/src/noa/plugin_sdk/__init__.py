"""The NOA plugin SDK: everything a plugin author needs, and nothing of the kernel.

Write hook implementations with :data:`hookimpl`, describe config with
:class:`PluginConfig`, contribute through the registrars the hooks receive and raise
errors from :mod:`noa.plugin_sdk.errors`. The test kit lives in
:mod:`noa.plugin_sdk.testing` (install ``noa-plugin-sdk[testing]``).
"""

from noa.plugin_sdk._markers import PROJECT_NAME, hookimpl, hookspec
from noa.plugin_sdk.config import PluginConfig, Secret
from noa.plugin_sdk.errors import (
    ApiError,
    BadRequest,
    ConfigError,
    Conflict,
    DriverLoadError,
    Forbidden,
    GatewayTimeout,
    NoaError,
    NotFound,
    PayloadTooLarge,
    PluginError,
    PluginLoadError,
    PluginStartError,
    RegistrationError,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    Unprocessable,
)
from noa.plugin_sdk.host import Host
from noa.plugin_sdk.registry import Contribution, Registry
from noa.plugin_sdk.transport import GrpcService, Middleware, RouteGroup
from noa.plugin_sdk.types import (
    CheckResult,
    ComponentHealth,
    DriverSlot,
    HealthCheck,
    HostedPlugins,
    PluginInfo,
    PluginRecord,
    ReadinessReport,
    ServerSettings,
)

__all__ = [
    "PROJECT_NAME",
    "ApiError",
    "BadRequest",
    "CheckResult",
    "ComponentHealth",
    "ConfigError",
    "Conflict",
    "Contribution",
    "DriverLoadError",
    "DriverSlot",
    "Forbidden",
    "GatewayTimeout",
    "GrpcService",
    "HealthCheck",
    "Host",
    "HostedPlugins",
    "Middleware",
    "NoaError",
    "NotFound",
    "PayloadTooLarge",
    "PluginConfig",
    "PluginError",
    "PluginInfo",
    "PluginLoadError",
    "PluginRecord",
    "PluginStartError",
    "ReadinessReport",
    "RegistrationError",
    "Registry",
    "RouteGroup",
    "Secret",
    "ServerSettings",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "Unprocessable",
    "hookimpl",
    "hookspec",
]
