"""Hook implementations of the inference plugin; each delegates to its module."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from noa.builtin_plugins.inference.config import InferenceConfig
from noa.builtin_plugins.inference.repository import ModelRepository

if TYPE_CHECKING:  # NumPy and Numba load only in a process that serves
    from noa.builtin_plugins.inference.runtime import ModelRuntime
from noa.plugin_sdk import (
    CheckResult,
    HealthCheck,
    Host,
    PluginConfig,
    PluginInfo,
    Registry,
    hookimpl,
)
from noa.plugin_sdk.metrics import metrics_of
from noa.plugin_sdk.ports.broker import BROKER_STATE_KEY
from noa.plugin_sdk.transport import RouteGroup

log = logging.getLogger("noa.inference")

PLUGIN_INFO = PluginInfo(
    description="Model repository, encoder kernels (cpu, cuda), dynamic batching; "
    "native, OpenAI and KServe v2 inference APIs",
    after=("observability", "broker"),
)

RUNTIME_STATE_KEY = "noa.inference.runtime"
_LOADER_KEY = "noa.inference.loader"
_SYNC_KEY = "noa.inference.admin_sync"


def repository_path(config: InferenceConfig, data_dir: str) -> Path:
    return Path(config.repository) if config.repository else Path(data_dir) / "models"


@hookimpl
def noa_register_config_sections(sections: Registry[type[PluginConfig]]) -> None:
    sections.add("inference", InferenceConfig)


@hookimpl
def noa_register_model_families(families: Registry[Any]) -> None:
    from noa.builtin_plugins.inference.bert import load_bert

    families.add("bert", load_bert)


@hookimpl
def noa_configure(host: Host) -> None:
    from noa.builtin_plugins.inference.admin_sync import AdminSync
    from noa.builtin_plugins.inference.runtime import ModelRuntime

    config = host.section("inference", InferenceConfig)
    families = host.collect("noa_register_model_families", Registry[Any]("model family"))
    device_driver = host.driver("device")
    runtime = ModelRuntime(
        ModelRepository(repository_path(config, host.server.data_dir)),
        config,
        {c.name: c.item for c in families.contributions()},
        device_driver,
        metrics_of(host.state),
    )
    host.state[RUNTIME_STATE_KEY] = runtime
    host.state[_SYNC_KEY] = AdminSync(runtime)


def _runtime(host: Host) -> ModelRuntime:
    runtime: ModelRuntime = host.state[RUNTIME_STATE_KEY]
    return runtime


@hookimpl
def noa_register_embedders(embedders: Registry[Any], host: Host) -> None:
    from noa.builtin_plugins.inference.embedder import RuntimeEmbedder

    embedders.add("inference", RuntimeEmbedder(_runtime(host)))


@hookimpl
def noa_register_task_types(task_types: Registry[Any], host: Host) -> None:
    import msgspec
    from noa.builtin_plugins.inference.api_native import InferRequest, infer_tensors
    from noa.plugin_sdk.errors import ApiError
    from noa.plugin_sdk.tasks import TaskContext, TaskFailed, TaskType

    class EmbedTask(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
        input: list[str]
        model: str | None = None

    runtime = _runtime(host)

    def failed(exc: ApiError, code: str) -> TaskFailed:
        # A model still loading (503) may be there at the next attempt.
        return TaskFailed(exc.message, code=exc.code or code, retry=exc.status_code >= 500)

    async def embed(ctx: TaskContext, job: EmbedTask) -> dict[str, Any]:
        try:
            served = runtime.get(job.model) if job.model else runtime.default()
            result = await served.embed(job.input, truncate=True)
        except ApiError as exc:
            raise failed(exc, "embed_failed") from None
        return {"model": served.name, "embeddings": result.vectors.tolist()}

    async def infer(ctx: TaskContext, job: InferRequest) -> Any:
        try:
            return await infer_tensors(runtime, job)
        except ApiError as exc:
            raise failed(exc, "infer_failed") from None

    task_types.add(
        "embed",
        TaskType(embed, input_type=EmbedTask, description="texts to vectors (as /v1/embed)"),
    )
    task_types.add(
        "infer",
        TaskType(
            infer, input_type=InferRequest, description="named tensors in and out (as /v1/infer)"
        ),
    )


@hookimpl
def noa_register_routes(routes: Registry[RouteGroup], host: Host) -> None:
    from noa.builtin_plugins.inference.api_kserve import kserve_error_body, kserve_router
    from noa.builtin_plugins.inference.api_native import admin_handlers, native_handlers
    from noa.builtin_plugins.inference.api_openai import openai_handlers

    runtime = _runtime(host)
    invoke = "inference:invoke"
    routes.add("inference", RouteGroup(handlers=tuple(native_handlers(runtime)), scope=invoke))
    routes.add(
        "inference-admin",
        RouteGroup(handlers=tuple(admin_handlers(host.state[_SYNC_KEY])), scope="inference:admin"),
    )
    routes.add(
        "openai-embeddings", RouteGroup(handlers=tuple(openai_handlers(runtime)), scope=invoke)
    )
    routes.add(
        "kserve-v2",
        RouteGroup(handlers=(kserve_router(runtime),), error_body=kserve_error_body, scope=invoke),
    )


@hookimpl
async def noa_startup(host: Host) -> None:
    # Models load in the background: the server answers (liveness, 503 for a model still
    # loading) while they do, and /ready turns ready when they are in.
    runtime = _runtime(host)
    await host.state[_SYNC_KEY].start(host.state.get(BROKER_STATE_KEY))
    host.state[_LOADER_KEY] = asyncio.get_running_loop().create_task(runtime.start())


@hookimpl
def noa_register_health_checks(checks: Registry[HealthCheck], host: Host) -> None:
    runtime = _runtime(host)

    async def models() -> CheckResult:
        statuses = runtime.statuses()
        loading = [s.name for s in statuses if s.state == "loading"]
        failed = [f"{s.name} ({s.error})" for s in statuses if s.state == "failed"]
        if not runtime.started:
            return CheckResult(status="failing", detail="models are being loaded")
        if loading:
            return CheckResult(status="failing", detail="loading: " + ", ".join(loading))
        if failed:
            return CheckResult(status="degraded", detail="failed: " + "; ".join(failed))
        ready = [s.name for s in statuses if s.state == "ready"]
        return CheckResult(detail="ready: " + (", ".join(ready) or "no model loaded"))

    checks.add("models", HealthCheck(check=models, timeout_s=1.0))


@hookimpl
async def noa_shutdown(host: Host) -> None:
    loader: asyncio.Task[None] | None = host.state.pop(_LOADER_KEY, None)
    if loader is not None and not loader.done():
        loader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loader
    await host.state[_SYNC_KEY].stop()
    await _runtime(host).close()


@hookimpl
def noa_register_commands(commands: Registry[Any]) -> None:
    from noa.builtin_plugins.inference.cli import models

    commands.add("models", models)


@hookimpl
def noa_register_grpc_services(services: Registry[Any], host: Host) -> None:
    from noa.builtin_plugins.inference.grpc_service import grpc_services

    for name, service in grpc_services(_runtime(host)):
        services.add(name, service)
