"""Hook implementations of the auth plugin; each delegates to its module."""

from __future__ import annotations

from typing import Any

from noa.builtin_plugins.auth.config import AuthConfig
from noa.plugin_sdk import (
    ConfigError,
    Host,
    PluginConfig,
    PluginInfo,
    Registry,
    RouteGroup,
    hookimpl,
)

PLUGIN_INFO = PluginInfo(
    description="Security: JWT, API keys, capability tokens, scopes and rate limits",
    requires=("storage", "cache"),
    after=("storage", "cache", "broker", "observability"),
)

_POLICY = "noa.auth.policy"


def _config(host: Host) -> AuthConfig:
    return host.section("auth", AuthConfig)


@hookimpl
def noa_register_config_sections(sections: Registry[type[PluginConfig]]) -> None:
    sections.add("auth", AuthConfig)


@hookimpl
def noa_register_migrations(migrations: Registry[str]) -> None:
    migrations.add("auth", "noa.builtin_plugins.auth.piccolo_app")


@hookimpl
def noa_register_auth_schemes(schemes: Registry[Any], host: Host) -> None:
    from noa.builtin_plugins.auth.apikeys import ApiKeyScheme
    from noa.builtin_plugins.auth.capability import CapabilityScheme
    from noa.builtin_plugins.auth.jwt_scheme import JwtScheme

    config = _config(host)
    schemes.add("api_key", ApiKeyScheme(config))
    schemes.add("capability", CapabilityScheme(config))
    schemes.add("jwt", JwtScheme(config))


@hookimpl
def noa_access_policy(host: Host) -> Any:
    return _policy(host)


def _policy(host: Host) -> Any:
    from noa.builtin_plugins.auth.policy import Policy

    policy = host.state.get(_POLICY)
    if policy is None:
        schemes = host.collect("noa_register_auth_schemes", Registry[Any]("auth scheme"))
        try:
            policy = Policy(_config(host), [c.item for c in schemes.contributions()])
        except ValueError as exc:  # a malformed trusted proxy
            raise ConfigError(
                "auth.trusted_proxies", _config(host).trusted_proxies, "config", str(exc)
            ) from exc
        host.state[_POLICY] = policy
    return policy


def _rate_limit_store(host: Host) -> tuple[str | None, str]:
    """Where the rate-limit buckets live (``auth.rate_limit_store``): the cache's Redis
    URL, or None for memory; and the key prefix (the cache's, so deployments sharing a
    Redis stay apart). The [cache] section is read by its documented keys."""
    store = _config(host).rate_limit_store
    cache: Any = host.section("cache", PluginConfig)
    prefix = f"{cache.redis_prefix}rl:"
    if store == "memory" or (store == "auto" and host.config_value("drivers.cache") != "redis"):
        return None, prefix
    return cache.redis_url.reveal(), prefix


@hookimpl
async def noa_startup(host: Host) -> None:
    await _policy(host).start(host, *_rate_limit_store(host))


@hookimpl
async def noa_shutdown(host: Host) -> None:
    policy = host.state.get(_POLICY)
    if policy is not None:
        await policy.close()


@hookimpl
def noa_register_routes(routes: Registry[RouteGroup], host: Host) -> None:
    from noa.builtin_plugins.auth.admin_api import admin_handlers

    policy = _policy(host)
    handlers = admin_handlers(
        host, _config(host), key_scheme=policy.scheme("api_key"), jwt_scheme=policy.scheme("jwt")
    )
    routes.add("auth-admin", RouteGroup(handlers=tuple(handlers), scope="auth:admin"))


@hookimpl
def noa_register_commands(commands: Registry[Any]) -> None:
    from noa.builtin_plugins.auth.cli import keys, tokens

    commands.add("keys", keys)
    commands.add("tokens", tokens)
