"""The same tasks over the ``nats`` broker (real NATS JetStream), on a stream and a
subject prefix of their own."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import nats
import pytest
from noa.plugin_sdk.tasks import TaskContext, TaskType

pytestmark = pytest.mark.nats


async def test_tasks_run_and_retry_through_jetstream(
    serve: Any, submit: Any, finished: Any
) -> None:
    async def flaky(ctx: TaskContext, job: dict[str, Any]) -> int:
        if ctx.attempt == 1:
            raise RuntimeError("first run fails")
        return int(job["n"]) * 2

    tag = uuid.uuid4().hex[:12]
    broker = {"nats_stream": f"NOATEST_{tag}", "subject_prefix": f"noatest{tag}"}
    config = {"drivers": {"broker": "nats"}, "broker": broker}
    try:
        async with serve({"flaky": TaskType(flaky)}, config=config) as noa:
            ids = [(await submit(noa, type="flaky", input={"n": n}))["id"] for n in range(5)]
            done = [await finished(noa, task_id) for task_id in ids]
            assert [(t["state"], t["output"], t["attempts"]) for t in done] == [
                ("succeeded", n * 2, 2) for n in range(5)
            ]
    finally:
        nc = await nats.connect("nats://127.0.0.1:4222")
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(f"NOATEST_{tag}")
        await nc.close()
