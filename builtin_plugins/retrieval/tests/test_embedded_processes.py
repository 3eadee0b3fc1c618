"""Several processes on one embedded store folder, as the server's workers share it: each
sees the others' writes, creates and deletes without a restart; concurrent writers lose
nothing; a compaction elsewhere doesn't disturb searches; a writer killed while it holds
the write lock blocks no one and loses no acknowledged batch.

Each worker is this file run as a script (``python test_embedded_processes.py FOLDER``):
a store on ``FOLDER`` taking JSON commands on stdin and answering one line each.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from noa.builtin_plugins.retrieval.embedded import EmbeddedVectorStore
from noa.builtin_plugins.retrieval.record_log import RecordLog
from noa.plugin_sdk.ports.vectors import Point

DIM = 16


def vector_of(point_id: str) -> list[float]:
    """The vector every process gives ``point_id``: one of its own, far from the rest."""
    rng = np.random.default_rng(zlib.crc32(point_id.encode()))
    return [float(x) for x in rng.standard_normal(DIM)]


# -- the worker process ---------------------------------------------------------------------


async def _loop(store: EmbeddedVectorStore, name: str, prefix: str, batches: int, size: int) -> int:
    """Upsert ``batches`` batches, telling each one acknowledged as soon as it is."""
    for batch in range(batches):
        ids = [f"{prefix}{batch}-{i}" for i in range(size)]
        await store.upsert(name, [Point(id=i, vector=vector_of(i)) for i in ids])
        print(json.dumps({"acked": batch}), flush=True)
    return batches


async def _firsts(store: EmbeddedVectorStore, name: str, ids: list[str]) -> list[Any]:
    """For each id, the best hit for its own vector: ``[id, payload]``."""
    found = []
    for point_id in ids:
        (hit, *_) = await store.search(name, vector_of(point_id), 1)
        found.append([hit.id, hit.payload])
    return found


async def _search_loop(
    store: EmbeddedVectorStore, name: str, probes: list[str], stop: str
) -> dict[str, Any]:
    """Search for each probe by its own vector until ``stop`` exists (telling when the
    first round is done): how many rounds, which searches found another point first,
    and whether a probe's payload ever went back to an older version."""
    rounds, wrong, went_back = 0, [], 0
    versions = dict.fromkeys(probes, -1)
    while not await asyncio.to_thread(os.path.exists, stop):
        for probe in probes:
            (hit, *_) = await store.search(name, vector_of(probe), 1)
            if hit.id != probe:
                wrong.append(hit.id)
            went_back += hit.payload["round"] < versions[probe]
            versions[probe] = hit.payload["round"]
        rounds += 1
        if rounds == 1:
            print(json.dumps({"acked": "searching"}), flush=True)
    return {"rounds": rounds, "wrong": wrong, "went_back": went_back}


async def _command(store: EmbeddedVectorStore, op: str, args: list[Any]) -> Any:
    if op == "create":
        return await store.create_collection(args[0], DIM, "cosine", {"round": "integer"})
    if op == "upsert":
        name, ids, round_ = args
        points = [Point(id=i, vector=vector_of(i), payload={"round": round_}) for i in ids]
        for start in range(0, len(points), 500):
            await store.upsert(name, points[start : start + 500])
        return None
    if op == "delete":
        return await store.delete(*args)
    if op == "count":
        return await store.count(*args)
    if op == "list":
        return await store.list_collections()
    if op == "drop":
        return await store.delete_collection(*args)
    if op == "info":
        info = await store.collection_info(*args)
        return [info.dim, info.distance, info.count]
    if op == "all_ids":
        hits = await store.search(args[0], [1.0] * DIM, 1_000_000)
        return [hit.id for hit in hits]
    if op == "firsts":
        return await _firsts(store, *args)
    if op == "loop":
        return await _loop(store, *args)
    if op == "search_loop":
        return await _search_loop(store, *args)
    raise ValueError(f"unknown command {op!r}")


async def _serve(folder: str) -> None:
    store = EmbeddedVectorStore(folder)
    await store.start()
    print(json.dumps({"ok": "ready"}), flush=True)
    for line in sys.stdin:
        op, args = json.loads(line)
        try:
            reply = {"ok": await _command(store, op, args)}
        except Exception as exc:
            reply = {"error": type(exc).__name__, "message": str(exc)}
        print(json.dumps(reply), flush=True)
    await store.close()


# -- driving workers from the tests ---------------------------------------------------------


class Failed(Exception):
    """A command failed in the worker: the exception's class name and message."""


class Worker:
    """A store on ``folder`` in a process of its own."""

    def __init__(self, folder: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, str(folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put("")

    def send(self, op: str, *args: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps([op, args]) + "\n")
        self.process.stdin.flush()

    def line(self, timeout: float = 60) -> dict[str, Any]:
        line = self.lines.get(timeout=timeout)
        if not line:
            raise EOFError("the worker exited")
        message: dict[str, Any] = json.loads(line)
        return message

    def reply(self, timeout: float = 60) -> Any:
        """The next answer, skipping acknowledgements."""
        while "acked" in (message := self.line(timeout)):
            pass
        if "error" in message:
            raise Failed(f"{message['error']}: {message['message']}")
        return message["ok"]

    def __call__(self, op: str, *args: Any) -> Any:
        self.send(op, *args)
        return self.reply()

    def stop(self) -> None:
        if self.process.poll() is None and self.process.stdin is not None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait()
        self._reader.join(timeout=10)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "vectors"


@pytest.fixture
def workers(folder: Path) -> Iterator[list[Worker]]:
    """Two workers on one folder."""
    started: list[Worker] = []
    try:
        started.extend(Worker(folder) for _ in range(2))
        for worker in started:  # started side by side: each takes seconds to import
            assert worker.reply() == "ready"
        yield started
    finally:
        for worker in started:
            if worker.process.poll() is None:
                worker.process.kill()
            worker.stop()


def fresh_ids(folder: Path, name: str) -> list[str]:
    """Every point id of ``name`` as a store opened now in this process sees them."""

    async def read() -> list[str]:
        store = EmbeddedVectorStore(folder)
        try:
            hits = await store.search(name, [1.0] * DIM, 1_000_000)
            return [hit.id for hit in hits]
        finally:
            await store.close()

    return asyncio.run(read())


def batch_ids(prefix: str, batch: int, size: int) -> list[str]:
    return [f"{prefix}{batch}-{i}" for i in range(size)]


# -- the tests ------------------------------------------------------------------------------


def test_writes_in_one_process_are_seen_by_another(workers: list[Worker]) -> None:
    a, b = workers
    a("create", "docs")
    ids = [f"p{i}" for i in range(50)]
    a("upsert", "docs", ids, 0)
    assert b("count", "docs") == 50
    assert b("firsts", "docs", ["p7", "p8"]) == [["p7", {"round": 0}], ["p8", {"round": 0}]]
    assert a("delete", "docs", ["p7", "nope"]) == 1
    a("upsert", "docs", ["p8"], 1)
    assert b("count", "docs") == 49
    assert "p7" not in b("all_ids", "docs")
    assert b("firsts", "docs", ["p8"]) == [["p8", {"round": 1}]]
    b("upsert", "docs", ["p7"], 2)  # and back the other way
    assert a("firsts", "docs", ["p7"]) == [["p7", {"round": 2}]]
    assert a("count", "docs") == b("count", "docs") == 50


def test_concurrent_writers_lose_nothing(workers: list[Worker], folder: Path) -> None:
    a, b = workers
    a("create", "docs")
    batches, size = 60, 25
    a.send("loop", "docs", "a", batches, size)
    b.send("loop", "docs", "b", batches, size)
    assert a.reply() == b.reply() == batches
    expected = {i for p in "ab" for n in range(batches) for i in batch_ids(p, n, size)}
    for worker in workers:
        listed = worker("all_ids", "docs")
        assert len(listed) == len(expected) and set(listed) == expected
    sample = sorted(expected)[::37]
    assert [first for first, _ in a("firsts", "docs", sample)] == sample
    assert [first for first, _ in b("firsts", "docs", sample)] == sample
    listed = fresh_ids(folder, "docs")
    assert len(listed) == len(expected) and set(listed) == expected


def test_collections_made_and_deleted_elsewhere(workers: list[Worker]) -> None:
    a, b = workers
    assert b("list") == []
    a("create", "docs")
    a("create", "other")
    assert b("list") == ["docs", "other"]
    b("upsert", "docs", ["p1"], 0)
    assert a("count", "docs") == 1
    assert a("drop", "docs") is True
    with pytest.raises(Failed, match="NotFound: no collection named 'docs'"):
        b("count", "docs")
    with pytest.raises(Failed, match="NotFound"):
        b("upsert", "docs", ["p2"], 0)
    assert b("list") == ["other"]
    assert b("drop", "docs") is False
    b("create", "docs")  # the name, made anew
    assert a("info", "docs") == [DIM, "cosine", 0]
    with pytest.raises(Failed, match="Conflict"):
        a("create", "docs")


def test_searches_go_on_through_a_compaction_elsewhere(
    workers: list[Worker], folder: Path, tmp_path: Path
) -> None:
    a, b = workers
    a("create", "docs")
    ids = [f"p{i}" for i in range(1500)]
    a("upsert", "docs", ids, 0)
    stop = tmp_path / "stop"
    probes = ids[::100]
    b.send("search_loop", "docs", probes, str(stop))
    assert b.line() == {"acked": "searching"}
    for round_ in (1, 2):  # every point replaced twice: dead rows outnumber live ones
        a("upsert", "docs", ids, round_)
    stop.touch()
    seen = b.reply()
    assert seen["rounds"] > 1 and seen["wrong"] == [] and seen["went_back"] == 0
    assert not (folder / "docs" / "points-0.log").exists()  # compacted
    assert b("count", "docs") == 1500
    assert b("firsts", "docs", probes) == [[p, {"round": 2}] for p in probes]
    b("upsert", "docs", ["p0"], 3)  # written into the new generation
    assert a("firsts", "docs", ["p0"]) == [["p0", {"round": 3}]]


def test_a_writer_killed_holding_the_lock_blocks_no_one(
    workers: list[Worker], folder: Path
) -> None:
    a, b = workers
    a("create", "docs")
    assert b("count", "docs") == 0  # open in both
    size = 20
    a.send("loop", "docs", "k", 100_000, size)
    acked = [a.line()["acked"] for _ in range(10)]
    probe = os.open(folder / "docs" / ".write.lock", os.O_RDWR)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # kill it while it holds the lock
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.kill(a.process.pid, signal.SIGKILL)
                break
            fcntl.flock(probe, fcntl.LOCK_UN)
        else:
            pytest.fail("the writer never held the lock")
    finally:
        os.close(probe)
    a.process.wait()
    while True:
        try:
            acked.append(a.line()["acked"])
        except EOFError:
            break
    assert acked == list(range(len(acked)))

    # As the kill may have left it, if it didn't: the start of a record, torn.
    (log_path,) = (folder / "docs").glob("points-*.log")
    records = RecordLog.open(log_path)
    _, end, length = records.read_new()
    records.close()
    if end == length:
        with log_path.open("ab") as torn:
            torn.write(struct.pack("<II", 5000, 1234) + b"\x93\xa1u")
    length = log_path.stat().st_size
    listed = b("all_ids", "docs")  # a reader leaves the torn record alone
    assert log_path.stat().st_size == length
    assert len(listed) in (len(acked) * size, (len(acked) + 1) * size)

    b("upsert", "docs", ["after"], 0)  # the next writer gets the lock and cuts it off
    records = RecordLog.open(log_path)
    _, end, length = records.read_new()
    records.close()
    assert end == length
    listed = fresh_ids(folder, "docs")
    assert set(b("all_ids", "docs")) == set(listed)
    assert len(listed) == len(set(listed))
    for batch in range(len(acked) + 1):  # each batch wholly there or wholly not
        there = {i in listed for i in batch_ids("k", batch, size)}
        assert there == {True} or (there == {False} and batch == len(acked)), batch
    assert "after" in listed


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1]))
