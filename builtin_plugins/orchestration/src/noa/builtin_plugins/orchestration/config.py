"""The ``[orchestration]`` config section."""

from __future__ import annotations

from typing import Annotated

import msgspec
from noa.plugin_sdk import PluginConfig

__all__ = ["OrchestrationConfig"]

Positive = Annotated[float, msgspec.Meta(gt=0)]


class OrchestrationConfig(PluginConfig, frozen=True):
    # Tasks one worker process runs at the same time.
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 8
    # Queued tasks (waiting or scheduled) past which a submission gets 429. Checked
    # against the count read at every poll plus this process's submissions since: with
    # several processes it may overshoot by what the others accepted in one poll.
    max_queued: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    # The Retry-After (seconds) of that 429.
    retry_after_s: Annotated[int, msgspec.Meta(ge=1)] = 5
    # Bytes a task's input may take as JSON; more is 413.
    max_input_bytes: Annotated[int, msgspec.Meta(ge=2)] = 1024 * 1024
    # The largest timeout_s a submission may ask for.
    max_timeout_s: Positive = 24 * 3600.0
    # Retry delay after failed attempt n: min(max, base * 2**(n-1)), with jitter (half of
    # it random).
    backoff_base_s: Positive = 1.0
    backoff_max_s: Positive = 300.0
    # A running task's lease: renewed by its worker every poll; a task whose lease ran
    # out (its worker died) is queued again. Keep it several poll intervals long.
    lease_s: Positive = 30.0
    # How often each worker renews its leases, queues tasks that became due and takes
    # back those of dead workers.
    poll_interval_s: Positive = 1.0
    # A queued task whose id was published this long ago and that no worker took yet is
    # published again (a broker that lost it, such as `inprocess` in a crash).
    redispatch_after_s: Positive = 60.0
    # At shutdown, time running tasks get to finish before they are interrupted and
    # given back to the queue.
    shutdown_grace_s: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    # Steps one workflow may have.
    max_workflow_steps: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 100
    # The longest POST /v1/workflow may wait for its workflow to end (its timeout_s
    # query parameter, 60 s by default, is capped to this).
    max_wait_s: Positive = 600.0
    # Seconds between the comment lines that keep an idle event stream
    # (GET /v1/tasks/{id}/events, /v1/workflows/{id}/events) open through proxies.
    events_heartbeat_s: Positive = 15.0
    # Progress events waiting to be published on the broker, per process; past this
    # they are dropped (events are best effort, never slowing a task).
    events_buffer: Annotated[int, msgspec.Meta(ge=4)] = 10_000
    # http_request tasks: the hosts they may call (exact names, or "*.example.com" for
    # its subdomains). Empty, the default, allows none: every such task fails at once.
    http_allowed_hosts: tuple[str, ...] = ()
    # The longest timeout an http_request task may ask for, and the response body
    # bytes kept in its output (more is cut, with "truncated": true).
    http_max_timeout_s: Positive = 60.0
    http_max_response_bytes: Annotated[int, msgspec.Meta(ge=0)] = 1024 * 1024
    # The broker work queue carrying task ids to workers.
    queue: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")] = (
        "orchestration.tasks"
    )
