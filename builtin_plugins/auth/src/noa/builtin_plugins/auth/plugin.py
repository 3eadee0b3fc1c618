"""Hook implementations of the auth plugin; each delegates to its module."""

from __future__ import annotations

from noa.builtin_plugins.auth.config import AuthConfig
from noa.plugin_sdk import PluginConfig, PluginInfo, Registry, hookimpl

PLUGIN_INFO = PluginInfo(
    description="Security: JWT, API keys, capability tokens, scopes and rate limits",
    requires=("storage", "cache"),
    after=("storage", "cache", "broker"),
)


@hookimpl
def noa_register_config_sections(sections: Registry[type[PluginConfig]]) -> None:
    sections.add("auth", AuthConfig)
