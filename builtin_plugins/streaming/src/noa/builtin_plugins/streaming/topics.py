"""The event topics clients follow, and the broker subject and scope of each: the one
place that maps what a client asks for to what the server publishes.

A topic is a family name, optionally followed by ``.<id>``. The scope of a family is
the one the REST routes serving the same data declare, so a credential reads the same
things over every transport.

==================  ======================================  ==================
topic               broker subject                          scope
==================  ======================================  ==================
``tasks.<id>``      ``orchestration.events.tasks.<id>``     ``tasks:read``
``tasks``           ``orchestration.events.tasks.*``        ``tasks:read``
``workflows.<id>``  ``orchestration.events.workflows.<id>`` ``tasks:read``
``workflows``       ``orchestration.events.workflows.*``    ``tasks:read``
``models``          ``inference.models.admin``              ``inference:invoke``
``ingest-jobs.<id>`` ``retrieval.jobs.<id>``                ``retrieval:write``
``ingest-jobs``     ``retrieval.jobs.*``                    ``retrieval:write``
``plugins.<name>``  ``plugin_events.<name>.>``              ``plugins:events``
==================  ======================================  ==================

``plugins.<name>`` is where any plugin's own events reach clients: a plugin publishes
JSON on ``plugin_events.<its name>.<event>``.
"""

from __future__ import annotations

import re

import msgspec
from noa.plugin_sdk.errors import BadRequest

__all__ = ["FAMILIES", "PLUGIN_EVENTS_PREFIX", "Family", "Topic", "resolve"]

#: Where plugins publish events meant for clients: ``plugin_events.<plugin>.<event>``.
PLUGIN_EVENTS_PREFIX = "plugin_events"
# An id in a topic: one subject token of safe characters (task ids, plugin names).
_ID = re.compile(r"[A-Za-z0-9_:-]{1,128}")


class Family(msgspec.Struct, frozen=True, kw_only=True):
    """One kind of topic. ``subject`` is the subject prefix; with an id the topic's
    subject is ``<subject>.<id>``, without ``<subject>.*`` (``all_suffix``)."""

    subject: str
    scope: str
    # The subject of the bare family name, or None when an id is required.
    all_suffix: str | None = ".*"
    # The subject of one id: ``{subject}.{id}`` then this suffix.
    id_suffix: str = ""
    description: str


FAMILIES: dict[str, Family] = {
    "tasks": Family(
        subject="orchestration.events.tasks",
        scope="tasks:read",
        description="a task's progress (queued, started, retried, succeeded, dead ...)",
    ),
    "workflows": Family(
        subject="orchestration.events.workflows",
        scope="tasks:read",
        description="a workflow's state and its steps' task events",
    ),
    "models": Family(
        subject="inference.models.admin",
        scope="inference:invoke",
        all_suffix="",
        description="models loaded and unloaded through the admin API",
    ),
    "ingest-jobs": Family(
        subject="retrieval.jobs",
        scope="retrieval:write",
        description="a bulk ingestion job's progress",
    ),
    "plugins": Family(
        subject=PLUGIN_EVENTS_PREFIX,
        scope="plugins:events",
        all_suffix=None,
        id_suffix=".>",
        description="events a plugin publishes on plugin_events.<plugin>.<event>",
    ),
}


class Topic(msgspec.Struct, frozen=True):
    name: str
    subject: str
    scope: str


def resolve(name: str) -> Topic:
    """The topic ``name``; ``BadRequest`` (code ``unknown_topic``) naming the topics
    there are when it is not one."""
    family_name, dot, ident = name.partition(".")
    family = FAMILIES.get(family_name)
    if family is not None:
        if not dot and family.all_suffix is not None:
            return Topic(name, family.subject + family.all_suffix, family.scope)
        if ident and family.all_suffix != "" and _ID.fullmatch(ident):
            return Topic(name, f"{family.subject}.{ident}{family.id_suffix}", family.scope)
    known = ", ".join(
        (f if fam.all_suffix == "" else f"{f}.<name>" if fam.all_suffix is None else f"{f}[.<id>]")
        for f, fam in FAMILIES.items()
    )
    raise BadRequest(f"unknown topic {name[:200]!r}; the topics are {known}", code="unknown_topic")
