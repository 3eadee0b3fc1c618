"""Backpressure: the ``orchestration.max_queued`` bound on queued tasks.

A submission is checked against an estimate, not a ``COUNT(*)`` of its own: the count
read from the database at every scheduler poll (``poll_interval_s``), plus the tasks
this process queued since. One process holds the bound exactly; with several, each
may accept up to what the others queued during one poll interval before it sees them.
"""

from __future__ import annotations

from noa.builtin_plugins.orchestration.config import OrchestrationConfig
from noa.plugin_sdk.errors import TooManyRequests

__all__ = ["QueueBound"]


class QueueBound:
    __slots__ = ("config", "queued")

    def __init__(self, config: OrchestrationConfig) -> None:
        self.config = config
        self.queued = 0

    def check(self) -> None:
        """Raise 429 (with ``Retry-After``) while the queue is full."""
        if self.queued >= self.config.max_queued:
            raise TooManyRequests(
                f"{self.queued} tasks are queued, the most this server accepts "
                "(orchestration.max_queued); retry after the Retry-After delay",
                code="queue_full",
                headers={"Retry-After": str(self.config.retry_after_s)},
            )

    def added(self, count: int = 1) -> None:
        self.queued += count

    def counted(self, queued: int) -> None:
        """The database's count, read at a poll."""
        self.queued = queued
