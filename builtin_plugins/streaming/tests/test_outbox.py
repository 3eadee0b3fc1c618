"""The per-client send buffer and its slow-consumer policies, and the topic table."""

from __future__ import annotations

import json

import pytest
from noa.builtin_plugins.streaming.outbox import Outbox
from noa.builtin_plugins.streaming.topics import resolve
from noa.plugin_sdk.errors import BadRequest


def frames(outbox: Outbox) -> list[dict[str, object]]:
    taken: list[dict[str, object]] = []
    while batch := outbox.take():
        taken += [json.loads(f) for f in batch]
    return taken


def test_drop_oldest_keeps_the_newest_events_behind_a_gap_marker() -> None:
    dropped: list[int] = []
    outbox = Outbox(3, close_on_overflow=False, on_drop=dropped.append)
    outbox.reply('{"type":"subscribed","topic":"t"}')
    for n in range(5):
        outbox.event("t", json.dumps({"n": n}))
    got = frames(outbox)
    assert got[0] == {"type": "subscribed", "topic": "t"}
    assert got[1] == {"type": "gap", "dropped": 2}
    assert [(f["seq"], f["event"]) for f in got[2:]] == [
        (3, {"n": 2}),
        (4, {"n": 3}),
        (5, {"n": 4}),
    ]
    assert sum(dropped) == 2 and not outbox.overflowed


def test_close_policy_marks_the_outbox_overflowed() -> None:
    outbox = Outbox(2, close_on_overflow=True)
    for n in range(3):
        outbox.event("t", str(n))
    assert outbox.overflowed and outbox.take() == []


def test_replies_are_never_dropped_but_are_bounded() -> None:
    outbox = Outbox(1, close_on_overflow=False)
    for n in range(10):
        outbox.reply(json.dumps({"type": "pong", "id": n}))
    assert [f["id"] for f in frames(outbox)] == list(range(10))
    for _ in range(1000):
        outbox.reply("{}")
    assert outbox.overflowed


@pytest.mark.parametrize(
    ("name", "subject", "scope"),
    [
        ("tasks", "orchestration.events.tasks.*", "tasks:read"),
        ("tasks.abc123", "orchestration.events.tasks.abc123", "tasks:read"),
        ("workflows.w-1", "orchestration.events.workflows.w-1", "tasks:read"),
        ("models", "inference.models.admin", "inference:invoke"),
        ("ingest-jobs.j1", "retrieval.jobs.j1", "retrieval:write"),
        ("plugins.wasm", "plugin_events.wasm.>", "plugins:events"),
    ],
)
def test_topics_map_to_subjects_and_scopes(name: str, subject: str, scope: str) -> None:
    topic = resolve(name)
    assert (topic.subject, topic.scope) == (subject, scope)


@pytest.mark.parametrize(
    "name", ["", "tasks.", "tasks.a.b", "tasks.*", "tasks.>", "models.x", "plugins", "x"]
)
def test_what_is_not_a_topic_is_refused(name: str) -> None:
    with pytest.raises(BadRequest) as refused:
        resolve(name)
    assert refused.value.code == "unknown_topic"
