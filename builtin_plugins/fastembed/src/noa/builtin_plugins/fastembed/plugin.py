"""Hook implementations of the fastembed plugin; each delegates to its module."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from noa.builtin_plugins.fastembed.config import FastembedConfig
from noa.plugin_sdk import (
    CheckResult,
    HealthCheck,
    Host,
    PluginConfig,
    PluginInfo,
    Registry,
    hookimpl,
)

if TYPE_CHECKING:  # NumPy and fastembed load only in a process that serves
    from noa.builtin_plugins.fastembed.embedder import FastembedEmbedder

PLUGIN_INFO = PluginInfo(
    description="The `fastembed` embedder for retrieval: local ONNX model folders run by "
    "fastembed, never downloaded; `noa fastembed convert` builds one from safetensors",
)

_EMBEDDER_KEY = "noa.fastembed.embedder"


def _embedder(host: Host) -> FastembedEmbedder:
    # Made by whichever hook asks first: the retrieval plugin collects embedders in its
    # own noa_configure, which may run before ours.
    embedder: FastembedEmbedder | None = host.state.get(_EMBEDDER_KEY)
    if embedder is None:
        from noa.builtin_plugins.fastembed.embedder import FastembedEmbedder

        embedder = FastembedEmbedder(host.section("fastembed", FastembedConfig))
        host.state[_EMBEDDER_KEY] = embedder
    return embedder


@hookimpl
def noa_register_config_sections(sections: Registry[type[PluginConfig]]) -> None:
    sections.add("fastembed", FastembedConfig)


@hookimpl
def noa_register_embedders(embedders: Registry[Any], host: Host) -> None:
    embedders.add("fastembed", _embedder(host))


@hookimpl
async def noa_startup(host: Host) -> None:
    # Models are loaded before start-up goes on (on a worker thread, not the event
    # loop): a configured model that can't load stops the start, naming it and its folder.
    await _embedder(host).start()


@hookimpl
def noa_register_health_checks(checks: Registry[HealthCheck], host: Host) -> None:
    embedder = _embedder(host)

    async def models() -> CheckResult:
        statuses = embedder.statuses()
        failed = [f"{name} ({cause})" for name, cause in embedder.errors().items()]
        if failed:
            return CheckResult(status="failing", detail="failed: " + "; ".join(failed))
        loading = [name for name, state in statuses.items() if state == "loading"]
        if loading:
            return CheckResult(status="failing", detail="loading: " + ", ".join(loading))
        return CheckResult(detail="ready: " + (", ".join(statuses) or "no model configured"))

    checks.add("fastembed", HealthCheck(check=models, timeout_s=1.0))


@hookimpl
async def noa_shutdown(host: Host) -> None:
    embedder: FastembedEmbedder | None = host.state.pop(_EMBEDDER_KEY, None)
    if embedder is not None:
        await embedder.close()


@hookimpl
def noa_register_commands(commands: Registry[Any]) -> None:
    from noa.builtin_plugins.fastembed.cli import fastembed

    commands.add("fastembed", fastembed)
