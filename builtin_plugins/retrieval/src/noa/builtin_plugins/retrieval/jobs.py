"""Bulk ingestion as asynchronous jobs through the broker.

Submitting stores the job and its documents, cut into parts of :data:`PART_SIZE`, in the
storage slot in one transaction, then queues one broker message per part on the work
queue ``retrieval.ingest``; the answer (202) comes once the job is durable. Any worker
consuming the queue ingests a part (:meth:`Retrieval.ingest`, so documents are replaced
by id and unchanged ones skipped) and then, in one transaction, marks the part done and
adds its counts to the job; a part is counted once even when delivered twice.

Nothing is lost on a crash: a part whose worker dies is delivered again (NATS JetStream
after its ack timeout), and at start every worker queues again the parts that are not
done, which covers the ``inprocess`` broker losing its queue with the process. A part
that keeps failing for a reason outside the documents (the model not loaded, the store
down) is retried ``max_deliveries`` times, then its documents are reported failed with
that reason. Progress goes to the event bus as ``retrieval.jobs.<id>`` after each part.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Literal

import msgspec
from noa.builtin_plugins.retrieval.catalog import guarded
from noa.builtin_plugins.retrieval.service import Document, IngestFailure, Retrieval
from noa.plugin_sdk.errors import ApiError, BadRequest, NotFound, ServiceUnavailable
from noa.plugin_sdk.ports.broker import BrokerPort, Message, Subscription
from noa.plugin_sdk.ports.storage import StoragePort

__all__ = ["QUEUE", "IngestJobs", "JobView"]

log = logging.getLogger("noa.retrieval")

QUEUE = "retrieval.ingest"
EVENTS = "retrieval.jobs"
PART_SIZE = 64
MAX_DELIVERIES = 5
# The failed documents a job's status lists; the count covers them all.
MAX_LISTED_FAILURES = 1000

State = Literal["queued", "running", "completed"]


class JobView(msgspec.Struct, kw_only=True):
    id: str
    # The collection the documents go to (the alias's target when the job was made).
    collection: str
    state: State
    documents: int
    parts: int
    done_parts: int
    ingested: int
    skipped: int
    failed: int
    chunks: int
    created_at: float
    updated_at: float
    # The first failed documents with their reasons (at most 1000).
    failures: list[IngestFailure] = msgspec.field(default_factory=list)


class _PartMessage(msgspec.Struct, frozen=True):
    job: str
    part: int


_documents = msgspec.msgpack.Decoder(list[Document])
_failures = msgspec.json.Decoder(list[IngestFailure])


class IngestJobs:
    def __init__(self, service: Retrieval, *, ack_timeout_s: float) -> None:
        self.service = service
        self.ack_timeout_s = ack_timeout_s
        self._storage: StoragePort | None = None
        self._broker: BrokerPort | None = None
        self._consumer: Subscription | None = None
        self._recovery: asyncio.Task[None] | None = None

    async def start(self, storage: StoragePort, broker: BrokerPort | None) -> None:
        self._storage, self._broker = storage, broker
        if broker is None:
            log.warning("no broker plugin: bulk ingestion jobs are off (503)")
            return
        self._consumer = await broker.consume(
            QUEUE, self._handle, max_deliveries=MAX_DELIVERIES, ack_timeout_s=self.ack_timeout_s
        )
        # In the background: startup (and `noa check`) never wait on the job tables.
        self._recovery = asyncio.get_running_loop().create_task(self._requeue_unfinished())

    async def _requeue_unfinished(self) -> None:
        storage, _ = self._ready
        try:
            rows = await storage.fetch(
                "SELECT job, part FROM noa_retrieval_job_part WHERE done = FALSE ORDER BY key"
            )
            for row in rows:
                await self._queue(str(row["job"]), int(row["part"]))
        except Exception as exc:
            log.error(
                "could not queue unfinished ingestion jobs again (%s: %s); are the retrieval "
                "tables migrated? run `noa migrate apply`, then restart",
                type(exc).__name__,
                exc,
            )
            return
        if rows:
            log.info("queued %d unfinished part(s) of ingestion jobs again", len(rows))

    async def close(self) -> None:
        if self._recovery is not None:
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)
            self._recovery = None
        if self._consumer is not None:
            await self._consumer.unsubscribe()
            self._consumer = None

    @property
    def _ready(self) -> tuple[StoragePort, BrokerPort]:
        if self._storage is None or self._broker is None:
            raise ServiceUnavailable(
                "bulk ingestion needs the broker plugin; ingest in smaller calls to "
                "POST /v1/collections/{name}/documents instead",
                code="jobs_unavailable",
            )
        return self._storage, self._broker

    # -- submitting and reading -------------------------------------------------------------

    @guarded
    async def submit(self, name: str, documents: Sequence[Document]) -> JobView:
        storage, _ = self._ready
        limit = self.service.config.max_job_documents
        if len(documents) > limit:
            raise BadRequest(
                f"{len(documents)} documents in one job; at most {limit} "
                "(retrieval.max_job_documents)",
                code="too_many_documents",
                param="documents",
            )
        record, _ = await self.service.catalog.resolve(name)
        job_id = uuid.uuid4().hex
        now = time.time()
        parts = [documents[i : i + PART_SIZE] for i in range(0, len(documents), PART_SIZE)]
        async with storage.transaction() as tx:
            await tx.execute(
                "INSERT INTO noa_retrieval_job (id, collection, state, parts, done_parts, "
                "documents, ingested, skipped, failed, chunks, created_at, updated_at) "
                "VALUES ($1, $2, 'queued', $3, 0, $4, 0, 0, 0, 0, $5, $5)",
                job_id,
                record.name,
                len(parts),
                len(documents),
                now,
            )
            for number, part in enumerate(parts):
                await tx.execute(
                    "INSERT INTO noa_retrieval_job_part (key, job, part, documents, done, "
                    "failures) VALUES ($1, $2, $3, $4, FALSE, '[]')",
                    f"{job_id}/{number}",
                    job_id,
                    number,
                    msgspec.msgpack.encode(list(part)),
                )
        for number in range(len(parts)):
            await self._queue(job_id, number)
        return await self.get(job_id)

    @guarded
    async def get(self, job_id: str) -> JobView:
        storage, _ = self._ready
        row = await storage.fetch_one("SELECT * FROM noa_retrieval_job WHERE id = $1", job_id)
        if row is None:
            raise NotFound(f"no ingestion job {job_id!r}", code="job_not_found")
        failures: list[IngestFailure] = []
        for part in await storage.fetch(
            "SELECT failures FROM noa_retrieval_job_part WHERE job = $1 AND failures <> '[]' "
            "ORDER BY part",
            job_id,
        ):
            failures.extend(_failures.decode(str(part["failures"])))
            if len(failures) >= MAX_LISTED_FAILURES:
                break
        return JobView(
            id=str(row["id"]),
            collection=str(row["collection"]),
            state=row["state"],  # type: ignore[arg-type]
            documents=int(row["documents"]),  # type: ignore[call-overload]
            parts=int(row["parts"]),  # type: ignore[call-overload]
            done_parts=int(row["done_parts"]),  # type: ignore[call-overload]
            ingested=int(row["ingested"]),  # type: ignore[call-overload]
            skipped=int(row["skipped"]),  # type: ignore[call-overload]
            failed=int(row["failed"]),  # type: ignore[call-overload]
            chunks=int(row["chunks"]),  # type: ignore[call-overload]
            created_at=float(row["created_at"]),  # type: ignore[arg-type]
            updated_at=float(row["updated_at"]),  # type: ignore[arg-type]
            failures=failures[:MAX_LISTED_FAILURES],
        )

    # -- working ----------------------------------------------------------------------------

    async def _queue(self, job_id: str, part: int) -> None:
        _, broker = self._ready
        await broker.publish(QUEUE, msgspec.json.encode(_PartMessage(job_id, part)))

    async def _handle(self, message: Message) -> None:
        storage, broker = self._ready
        try:
            ref = msgspec.json.decode(message.payload, type=_PartMessage)
        except msgspec.DecodeError:
            log.error("dropped a malformed message on %s: %r", QUEUE, message.payload[:200])
            return
        key = f"{ref.job}/{ref.part}"
        row = await storage.fetch_one(
            "SELECT p.documents, p.done, j.collection FROM noa_retrieval_job_part p "
            "JOIN noa_retrieval_job j ON j.id = p.job WHERE p.key = $1",
            key,
        )
        if row is None or row["done"]:
            return  # delivered again after it was counted
        documents = _documents.decode(bytes(row["documents"]))  # type: ignore[arg-type]
        try:
            report = await self.service.ingest(str(row["collection"]), documents)
            counts = (report.ingested, report.skipped, report.chunks)
            failures = list(report.failed)
        except ApiError as exc:
            retryable = exc.status_code >= 500 or exc.status_code == 429
            if retryable and message.delivery < MAX_DELIVERIES:
                raise
            counts = (0, 0, 0)
            failures = [
                IngestFailure(id=d.id, code=exc.code or "failed", message=exc.message)
                for d in documents
            ]
        except Exception as exc:
            if message.delivery < MAX_DELIVERIES:
                raise
            log.exception("ingestion job %s part %d gave up", ref.job, ref.part)
            counts = (0, 0, 0)
            reason = f"{type(exc).__name__}: {exc}"
            failures = [IngestFailure(id=d.id, code="internal", message=reason) for d in documents]
        await self._finish(storage, ref, key, counts, failures)
        try:
            view = await self.get(ref.job)
            view.failures = []
            await broker.publish(f"{EVENTS}.{ref.job}", msgspec.json.encode(view))
        except Exception:  # progress events are best effort; the status is stored
            log.warning("could not publish progress of ingestion job %s", ref.job, exc_info=True)

    async def _finish(
        self,
        storage: StoragePort,
        ref: _PartMessage,
        key: str,
        counts: tuple[int, int, int],
        failures: list[IngestFailure],
    ) -> None:
        ingested, skipped, chunks = counts
        async with storage.transaction() as tx:
            marked = await tx.execute(
                "UPDATE noa_retrieval_job_part SET done = TRUE, documents = $2, failures = $3 "
                "WHERE key = $1 AND done = FALSE",
                key,
                b"",
                msgspec.json.encode(failures).decode(),
            )
            if marked != 1:
                return  # another delivery counted it first
            await tx.execute(
                "UPDATE noa_retrieval_job SET done_parts = done_parts + 1, "
                "ingested = ingested + $2, skipped = skipped + $3, failed = failed + $4, "
                "chunks = chunks + $5, updated_at = $6, "
                "state = CASE WHEN done_parts + 1 >= parts THEN 'completed' ELSE 'running' END "
                "WHERE id = $1",
                ref.job,
                ingested,
                skipped,
                len(failures),
                chunks,
                time.time(),
            )
