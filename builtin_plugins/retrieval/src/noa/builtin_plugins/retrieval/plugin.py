"""Hook implementations of the retrieval plugin.

It owns the ``vectors`` slot (starts the driver config chose, checks it for ``/ready``,
closes it at shutdown), keeps the retrieval catalog in the storage slot (its migration
runs with the others), and serves collections, aliases, ingestion and search over HTTP
with the embedders other plugins contribute (``noa_register_embedders``).
"""

from __future__ import annotations

from typing import Any

from noa.builtin_plugins.retrieval.config import RetrievalConfig
from noa.plugin_sdk import (
    HealthCheck,
    Host,
    PluginConfig,
    PluginInfo,
    PluginStartError,
    Registry,
    RouteGroup,
    hookimpl,
)
from noa.plugin_sdk.ports.broker import BROKER_STATE_KEY
from noa.plugin_sdk.ports.storage import STORAGE_STATE_KEY
from noa.plugin_sdk.ports.vectors import VECTORS_STATE_KEY
from noa.plugin_sdk.slot_driver import close_driver, ping_check, start_driver

PLUGIN_INFO = PluginInfo(
    description="Retrieval: collections behind aliases, ingestion and search (vectors slot)",
    after=("storage", "broker", "inference", "observability"),
)

_SERVICE_KEY = "noa.retrieval.service"
_JOBS_KEY = "noa.retrieval.jobs"


@hookimpl
def noa_register_config_sections(sections: Registry[type[PluginConfig]]) -> None:
    sections.add("retrieval", RetrievalConfig)


@hookimpl
def noa_register_migrations(migrations: Registry[str]) -> None:
    migrations.add("retrieval", "noa.builtin_plugins.retrieval.piccolo_app")


@hookimpl
def noa_configure(host: Host) -> None:
    from noa.builtin_plugins.retrieval.jobs import IngestJobs
    from noa.builtin_plugins.retrieval.service import Retrieval

    config = host.section("retrieval", RetrievalConfig)
    service = Retrieval(config)
    host.state[_SERVICE_KEY] = service
    host.state[_JOBS_KEY] = IngestJobs(service, ack_timeout_s=config.job_ack_timeout_s)


@hookimpl
def noa_register_task_types(task_types: Registry[Any], host: Host) -> None:
    import msgspec
    from noa.builtin_plugins.retrieval.service import Document, Retrieval
    from noa.plugin_sdk.errors import ApiError
    from noa.plugin_sdk.tasks import TaskContext, TaskFailed, TaskType

    # Built from live types: this module's annotations are strings, and Document is
    # imported here, not at module level.
    IngestTask = msgspec.defstruct(
        "IngestTask",
        [("collection", str), ("documents", list[Document])],
        frozen=True,
        forbid_unknown_fields=True,
        kw_only=True,
    )

    class SearchTask(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
        collection: str
        text: str | None = None
        vector: list[float] | None = None
        top_k: int = 10
        filter: dict[str, Any] | None = None
        score_threshold: float | None = None

    service: Retrieval = host.state[_SERVICE_KEY]

    def failed(exc: ApiError) -> TaskFailed:
        # A client's mistake fails for good; an unavailable store (503) may come back.
        retry = exc.status_code >= 500
        return TaskFailed(exc.message, code=exc.code or "retrieval_failed", retry=retry)

    async def ingest(ctx: TaskContext, job: Any) -> Any:
        try:
            return await service.ingest(job.collection, job.documents)
        except ApiError as exc:
            raise failed(exc) from None

    async def search(ctx: TaskContext, job: SearchTask) -> dict[str, Any]:
        try:
            record, hits = await service.search(
                job.collection,
                text=job.text,
                vector=job.vector,
                top_k=job.top_k,
                filter=job.filter,
                score_threshold=job.score_threshold,
            )
        except ApiError as exc:
            raise failed(exc) from None
        return {"collection": record.name, "hits": hits}

    task_types.add("ingest", TaskType(ingest, input_type=IngestTask, description="ingestion"))
    task_types.add("search", TaskType(search, input_type=SearchTask, description="search"))


@hookimpl
def noa_register_routes(routes: Registry[RouteGroup], host: Host) -> None:
    from noa.builtin_plugins.retrieval.api import retrieval_handlers

    handlers = retrieval_handlers(host.state[_SERVICE_KEY], host.state[_JOBS_KEY])
    # Each handler names its scope (search, write or admin); admin is the default.
    group = RouteGroup(handlers=tuple(handlers), tags=("retrieval",), scope="retrieval:admin")
    routes.add("retrieval", group)


@hookimpl
async def noa_startup(host: Host) -> None:
    from noa.builtin_plugins.retrieval.catalog import Catalog

    storage = host.state.get(STORAGE_STATE_KEY)
    if storage is None:
        raise PluginStartError(
            "retrieval", "the retrieval catalog needs the storage plugin: enable it"
        )
    config = host.section("retrieval", RetrievalConfig)
    data_dir = host.server.data_dir
    if host.config_value("drivers.vectors") == "pgvector":
        # Without a URL of its own it uses the storage plugin's database.
        storage_url = getattr(host.section("storage", PluginConfig), "postgres_url", "")
        url_key = "retrieval.pgvector_url"

        def build(driver: Any) -> Any:
            return driver.from_config(config, data_dir, storage_url=storage_url)
    else:
        url_key = "retrieval.qdrant_url"

        def build(driver: Any) -> Any:
            return driver.from_config(config, data_dir)

    vectors = await start_driver(host, "vectors", VECTORS_STATE_KEY, build=build, url_key=url_key)
    embedders = host.collect("noa_register_embedders", Registry[Any]("embedder"))
    host.state[_SERVICE_KEY].start(
        vectors, Catalog(storage), {c.name: c.item for c in embedders.contributions()}
    )
    await host.state[_JOBS_KEY].start(storage, host.state.get(BROKER_STATE_KEY))


@hookimpl
def noa_register_health_checks(checks: Registry[HealthCheck], host: Host) -> None:
    checks.add("vectors", ping_check(host, "vectors", VECTORS_STATE_KEY, timeout_s=3.0))


@hookimpl
async def noa_shutdown(host: Host) -> None:
    await host.state[_JOBS_KEY].close()
    await close_driver(host, VECTORS_STATE_KEY)


@hookimpl
def noa_register_grpc_services(services: Registry[Any], host: Host) -> None:
    from noa.builtin_plugins.retrieval.grpc_service import grpc_service

    services.add("retrieval", grpc_service(host.state[_SERVICE_KEY]))
