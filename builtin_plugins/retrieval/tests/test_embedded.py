"""What the contract can't see of the embedded driver: its files after a crash, a second
store on the same folder, compaction, concurrency, and filters against the port's
reference meaning. Separate processes are in test_embedded_processes."""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from noa.builtin_plugins.retrieval import collection_rows
from noa.builtin_plugins.retrieval.embedded import EmbeddedVectorStore
from noa.builtin_plugins.retrieval.record_log import RecordLog
from noa.plugin_sdk.errors import (
    BadRequest,
    NotFound,
    ServiceUnavailable,
    Unprocessable,
)
from noa.plugin_sdk.ports.vectors import FieldType, Point, matches

FIELDS: dict[str, FieldType] = {"n": "integer", "x": "float", "tag": "keyword", "ok": "bool"}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "vectors"


@pytest.fixture
async def store(folder: Path) -> AsyncIterator[EmbeddedVectorStore]:
    opened = EmbeddedVectorStore(folder)
    await opened.start()
    try:
        yield opened
    finally:
        await opened.close()


def points(count: int, dim: int = 8, seed: int = 0, prefix: str = "p") -> list[Point]:
    rng = random.Random(seed)
    return [
        Point(
            id=f"{prefix}{i}",
            vector=[rng.gauss(0.0, 1.0) for _ in range(dim)],
            payload={"n": i, "tag": "ab"[i % 2], "text": f"passage {i}"},
        )
        for i in range(count)
    ]


async def reopened(folder: Path, store: EmbeddedVectorStore | None = None) -> EmbeddedVectorStore:
    if store is not None:
        await store.close()
    again = EmbeddedVectorStore(folder)
    await again.start()
    return again


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def log_file(folder: Path, name: str) -> Path:
    (found,) = (folder / name).glob("points-*.log")
    return found


async def test_everything_survives_a_reopen(folder: Path) -> None:
    store = await reopened(folder)
    await store.create_collection("docs", 8, "cosine", FIELDS)
    await store.upsert("docs", points(300))
    await store.upsert("docs", [Point(id="p1", vector=[1.0] * 8, payload={"n": -1})])
    assert await store.delete("docs", ["p2", "p3", "nope"]) == 2
    query = [0.5] * 8
    before = await store.search("docs", query, 10)
    filtered = await store.search("docs", query, 5, {"n": {"lt": 10}, "tag": "a"})
    store = await reopened(folder, store)
    try:
        assert await store.list_collections() == ["docs"]
        info = await store.collection_info("docs")
        assert (info.dim, info.distance, info.fields, info.count) == (8, "cosine", FIELDS, 298)
        assert await store.search("docs", query, 10) == before
        assert await store.search("docs", query, 5, {"n": {"lt": 10}, "tag": "a"}) == filtered
        assert before[0].id == "p1" and before[0].payload == {"n": -1}
    finally:
        await store.close()


async def test_a_torn_last_record_is_cut_off_and_the_rest_served(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await reopened(folder)
    await store.create_collection("docs", 8, "dot")
    await store.upsert("docs", points(20))
    await store.close()
    log = log_file(folder, "docs")
    good_size = log.stat().st_size
    with log.open("ab") as f:  # the start of a record a crash interrupted
        f.write(struct.pack("<II", 5000, 1234) + b"\x93\xa1u")
    with caplog.at_level(logging.WARNING, logger="noa.retrieval"):
        store = await reopened(folder)
    try:
        assert await store.count("docs") == 20
        assert log.stat().st_size == good_size
        assert "cut off a torn record" in caplog.text and str(log) in caplog.text
        await store.upsert("docs", points(5, prefix="q"))
        store = await reopened(folder, store)
        assert await store.count("docs") == 25
    finally:
        await store.close()


async def test_an_upsert_whose_rows_never_reached_the_disk_is_dropped(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await reopened(folder)
    await store.create_collection("docs", 8, "euclid")
    await store.upsert("docs", points(10))
    await store.upsert("docs", points(10, prefix="late"))
    await store.close()
    (vectors,) = (folder / "docs").glob("vectors-*.f32")
    with vectors.open("r+b") as f:  # the last batch's rows, lost though its record was not
        f.seek(10 * 8 * 4)
        f.write(b"\0" * 10 * 8 * 4)
    with caplog.at_level(logging.WARNING, logger="noa.retrieval"):
        store = await reopened(folder)
    try:
        assert await store.count("docs") == 10
        assert "dropped the last upsert" in caplog.text
        hits = await store.search("docs", [0.0] * 8, 20)
        assert {h.id for h in hits} == {f"p{i}" for i in range(10)}
    finally:
        await store.close()


async def test_damage_a_crash_cant_explain_names_the_file(folder: Path) -> None:
    store = await reopened(folder)
    for name in ("docs", "other"):
        await store.create_collection(name, 8, "dot")
        await store.upsert(name, points(10))
        await store.upsert(name, points(10, prefix="more"))
    await store.close()
    log = log_file(folder, "docs")
    data = bytearray(log.read_bytes())
    data[20] ^= 0xFF  # inside the first record, with a whole record after it
    log.write_bytes(bytes(data))
    store = await reopened(folder)
    try:
        assert await store.list_collections() == ["docs", "other"]
        assert await store.count("other") == 20
        with pytest.raises(ServiceUnavailable) as caught:
            await store.search("docs", [1.0] * 8, 3)
        assert caught.value.code == "collection_unreadable"
        assert str(log) in caught.value.message and "byte 8" in caught.value.message
        assert await store.delete_collection("docs") is True
        assert await store.list_collections() == ["other"]
    finally:
        await store.close()


async def test_a_failed_log_write_leaves_nothing_behind(
    store: EmbeddedVectorStore, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.create_collection("docs", 8, "dot")
    await store.upsert("docs", points(10))

    def disk_full(self: RecordLog, body: bytes) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(RecordLog, "append", disk_full)
        with pytest.raises(OSError, match="No space"):
            await store.upsert("docs", points(10, prefix="lost"))
    assert await store.count("docs") == 10
    await store.upsert("docs", points(3, prefix="kept"))
    again = await reopened(folder, store)
    try:
        hits = await again.search("docs", [1.0] * 8, 50)
        assert len(hits) == 13 and not any(h.id.startswith("lost") for h in hits)
    finally:
        await again.close()


async def test_interrupted_creates_and_compactions_are_cleaned_up(folder: Path) -> None:
    store = await reopened(folder)
    await store.create_collection("docs", 4, "dot")
    await store.close()
    (folder / ".creating-half-0123").mkdir()
    (folder / ".deleting-gone-4567").mkdir()
    (folder / "docs" / "vectors-9.f32").write_bytes(b"\0" * 64)
    (folder / "docs" / "manifest.json.tmp").write_text("{")
    store = await reopened(folder)
    try:
        assert await store.list_collections() == ["docs"]
        assert names(folder) == [".catalog.lock", "docs"]
        assert names(folder / "docs") == [
            ".write.lock",
            "manifest.json",
            "points-0.log",
            "vectors-0.f32",
        ]
    finally:
        await store.close()


async def test_compaction_keeps_the_live_points(folder: Path) -> None:
    store = await reopened(folder)
    await store.create_collection("docs", 8, "cosine", FIELDS)
    await store.upsert("docs", points(1500))
    for round_ in range(2):  # every point replaced twice: dead rows outnumber live ones
        await store.upsert("docs", points(1500, seed=round_ + 1))
    await store.delete("docs", [f"p{i}" for i in range(0, 1500, 3)])
    listed = names(folder / "docs")
    generation = listed[2].removeprefix("points-").removesuffix(".log")
    assert generation != "0"
    assert listed == [
        ".write.lock",
        "manifest.json",
        f"points-{generation}.log",
        f"vectors-{generation}.f32",
    ]
    expected = await store.search("docs", [1.0] * 8, 10, {"tag": "b"})
    assert await store.count("docs") == 1000
    store = await reopened(folder, store)
    try:
        assert await store.count("docs") == 1000
        assert await store.search("docs", [1.0] * 8, 10, {"tag": "b"}) == expected
    finally:
        await store.close()


async def test_two_stores_on_one_folder_share_it(store: EmbeddedVectorStore, folder: Path) -> None:
    """A second store on the folder (as another worker process would open) is welcome:
    each sees what the other commits, without a restart."""
    other = await reopened(folder)
    try:
        await store.create_collection("docs", 8, "dot", FIELDS)
        assert await other.list_collections() == ["docs"]
        await other.upsert("docs", points(30))
        assert await store.count("docs") == 30
        await store.delete("docs", ["p0", "p1"])
        await store.upsert("docs", [Point(id="p2", vector=[1.0] * 8, payload={"n": -1})])
        (hit,) = await other.search("docs", [1.0] * 8, 1, {"n": {"lt": 0}})
        assert (hit.id, hit.payload, await other.count("docs")) == ("p2", {"n": -1}, 28)
        assert await store.search("docs", [0.5] * 8, 40) == await other.search(
            "docs", [0.5] * 8, 40
        )
        assert await other.delete_collection("docs") is True
        with pytest.raises(NotFound):
            await store.search("docs", [1.0] * 8, 1)
        assert await store.list_collections() == []
        await store.create_collection("docs", 3, "euclid")  # the name made anew
        await store.upsert("docs", [Point(id="new", vector=[0.0, 1.0, 2.0])])
        info = await other.collection_info("docs")
        assert (info.dim, info.distance, info.count) == (3, "euclid", 1)
    finally:
        await other.close()


async def test_a_record_another_store_is_writing_is_left_alone_until_whole(
    store: EmbeddedVectorStore, folder: Path
) -> None:
    await store.create_collection("docs", 8, "dot")
    await store.upsert("docs", points(10))
    other = await reopened(folder)
    try:
        assert await other.count("docs") == 10
        log = log_file(folder, "docs")
        before = log.stat().st_size
        await store.upsert("docs", points(5, prefix="late"))
        record = log.read_bytes()[before:]
        with log.open("r+b") as f:  # as another process sees the append in the middle
            f.truncate(before)
            f.seek(before)
            f.write(record[: len(record) // 2])
        assert await other.count("docs") == 10
        assert log.stat().st_size == before + len(record) // 2  # not cut off
        with log.open("ab") as f:
            f.write(record[len(record) // 2 :])
        assert await other.count("docs") == 15
        with log.open("r+b") as f:  # cut back, as a writer whose sync failed does...
            f.truncate(before)
        await store.upsert("docs", points(7, prefix="again"))  # ...before its next write
        hits = await other.search("docs", [1.0] * 8, 30)
        assert {h.id for h in hits} == {f"p{i}" for i in range(10)} | {
            f"again{i}" for i in range(7)
        }
    finally:
        await other.close()


async def test_concurrent_upserts_and_searches(store: EmbeddedVectorStore) -> None:
    await store.create_collection("docs", 16, "dot", FIELDS)
    batches = [points(200, dim=16, seed=s, prefix=f"b{s}-") for s in range(12)]
    seen: list[int] = []

    async def search_while_writing() -> None:
        for _ in range(40):
            hits = await store.search("docs", [1.0] * 16, 10, {"tag": "a"})
            assert all(h.payload["tag"] == "a" for h in hits)
            seen.append(len(hits))
            await asyncio.sleep(0)

    await asyncio.gather(
        *(store.upsert("docs", batch) for batch in batches),
        search_while_writing(),
        search_while_writing(),
    )
    assert await store.count("docs") == 2400
    assert len(seen) == 80 and seen[-1] == 10


@pytest.mark.parametrize("exact_max_values", [4_000_000, 0])
async def test_filters_mean_what_the_port_says(folder: Path, exact_max_values: int) -> None:
    rng = random.Random(5)
    batch = []
    for i in range(600):
        payload: dict[str, Any] = {}
        if i % 5:
            payload["n"] = rng.randint(-3, 3) if i % 7 else 2**62 + i
        if i % 4:
            payload["x"] = rng.choice([-1.5, 0.0, 2.0, 3.0, rng.random()])
        if i % 3:
            payload["tag"] = rng.choice(["red", "green", "blue"])
        if i % 6:
            payload["ok"] = rng.random() < 0.5
        batch.append(Point(id=str(i), vector=[rng.gauss(0, 1) for _ in range(4)], payload=payload))
    store = EmbeddedVectorStore(folder, exact_max_values=exact_max_values)
    try:
        await store.create_collection("f", 4, "euclid", FIELDS)
        await store.upsert("f", batch)
        for where in [
            {"n": 2},
            {"n": 2.0},
            {"n": 2.5},
            {"n": 2**62 + 8},
            {"n": {"gt": -1.5, "lte": 2}},
            {"n": {"gte": 2**62}},
            {"n": {"any": [1, 3.0, 7.5]}},
            {"x": 3},
            {"x": {"gte": 0.0, "lt": 2}},
            {"x": {"any": [2, -1.5]}},
            {"tag": "red", "ok": True},
            {"tag": {"any": ["green", "nope"]}},
            {"tag": "nope"},
            {"ok": False, "n": {"lt": 0}},
            {"ok": {"any": [True]}},
        ]:
            hits = await store.search("f", [0.0] * 4, 1000, where)
            wanted = {
                p.id
                for p in batch
                if all(k in p.payload and matches(c, p.payload[k]) for k, c in where.items())
            }
            assert {h.id for h in hits} == wanted, where
    finally:
        await store.close()


async def test_int8_pass_recall_on_unit_vectors(folder: Path) -> None:
    rng = np.random.default_rng(3)
    matrix = rng.standard_normal((20_000, 96))
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    store = EmbeddedVectorStore(folder, exact_max_values=0)
    try:
        await store.create_collection("u", 96, "cosine")
        await store.upsert(
            "u", [Point(id=str(i), vector=row) for i, row in enumerate(matrix.tolist())]
        )
        found = 0
        for query in rng.standard_normal((20, 96)):
            best = np.argsort(-(matrix @ query))[:10]
            hits = await store.search("u", query.tolist(), 10)
            found += len({h.id for h in hits} & {str(i) for i in best})
        assert found / 200 >= 0.99
    finally:
        await store.close()


async def test_driver_limits_and_batch_rules(store: EmbeddedVectorStore) -> None:
    with pytest.raises(BadRequest, match="dim must be an integer from 1 to 4096"):
        await store.create_collection("big", 4097, "dot")
    await store.create_collection("docs", 2, "dot", FIELDS)
    with pytest.raises(Unprocessable, match="'p': field 'n' is declared integer"):
        await store.upsert("docs", [Point(id="p", vector=[1.0, 0.0], payload={"n": 2**64})])
    with pytest.raises(Unprocessable, match="point 'q': the payload can't be stored"):
        await store.upsert(
            "docs",
            [
                Point(id="ok", vector=[1.0, 0.0]),
                Point(id="q", vector=[1.0, 0.0], payload={"what": object()}),
            ],
        )
    with pytest.raises(Unprocessable, match="point 'r' has a value too large for float32"):
        await store.upsert("docs", [Point(id="r", vector=[1e300, 0.0])])
    assert await store.count("docs") == 0
    await store.upsert(
        "docs",
        [
            Point(id="same", vector=[1.0, 0.0], payload={"v": 1}),
            Point(id="same", vector=[0.0, 1.0], payload={"v": 2}),
        ],
    )
    (hit,) = await store.search("docs", [0.0, 1.0], 5)
    assert (hit.id, hit.payload, hit.score) == ("same", {"v": 2}, 1.0)


async def test_searches_read_a_published_view_only(
    store: EmbeddedVectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search running while an upsert grows the arrays keeps its own snapshot."""
    await store.create_collection("docs", 8, "dot")
    await store.upsert("docs", points(60))
    found = store._entries["docs"].collection
    assert found is not None
    view = found._view
    await store.upsert("docs", points(500, prefix="new"))
    assert found._view is not view and view.rows == 60
    assert len(view.search(np.ones(8), 100, None)) == 60
    assert len(found.search(np.ones(8), 100, None)) == 100
    assert collection_rows.MIN_CAPACITY <= view.matrix.shape[0] < 560
