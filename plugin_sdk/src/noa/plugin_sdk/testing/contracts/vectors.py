"""The contract every ``noa.drivers.vectors`` driver passes.

Subclass :class:`VectorStoreContract` and implement
:meth:`~VectorStoreContract.make_driver`. Each test works in collections under random
names and deletes them afterwards, so a shared server is safe. Search results are
compared with an exact brute-force search in plain Python over a seeded random set
(500 vectors of 16 dimensions), small enough that an indexed store searches it exactly.
"""

from __future__ import annotations

import abc
import math
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import pytest
from noa.plugin_sdk.errors import BadRequest, Conflict, NotFound, Unprocessable
from noa.plugin_sdk.ports.vectors import Distance, Point, ScoredPoint, VectorStorePort

__all__ = ["VectorStoreContract"]

DIM = 16
SIZE = 500
TOP_K = 10

MakeCollection = Callable[[int, Distance], Awaitable[str]]


def _random_points(seed: int) -> list[Point]:
    rng = random.Random(seed)
    return [
        Point(
            id=f"p{index}",
            vector=[rng.gauss(0.0, 1.0) for _ in range(DIM)],
            payload={"group": index % 3, "parity": "even" if index % 2 == 0 else "odd"},
        )
        for index in range(SIZE)
    ]


def _brute_force(
    points: Sequence[Point],
    query: Sequence[float],
    distance: Distance,
    top_k: int,
    where: Mapping[str, Any] | None = None,
) -> list[tuple[str, float]]:
    def score(vector: Sequence[float]) -> float:
        if distance == "euclid":
            return math.dist(vector, query)
        dot = math.fsum(a * b for a, b in zip(vector, query, strict=True))
        if distance == "dot":
            return dot
        return dot / (math.hypot(*vector) * math.hypot(*query))

    wanted = dict(where or {})
    scored = [
        (point.id, score(point.vector))
        for point in points
        if all(point.payload.get(k, object()) == v for k, v in wanted.items())
    ]
    scored.sort(key=lambda item: item[1], reverse=distance != "euclid")
    return scored[:top_k]


class VectorStoreContract(abc.ABC):
    """Behaviour shared by every vector store driver."""

    # Scores are compared to a float64 brute force; float32 engines are this close.
    score_tolerance = 1e-4

    @abc.abstractmethod
    async def make_driver(self) -> VectorStorePort:
        """A new store of the driver under test, connected and ready."""

    @pytest.fixture
    async def driver(self) -> AsyncIterator[VectorStorePort]:
        store = await self.make_driver()
        try:
            yield store
        finally:
            await store.close()

    @pytest.fixture
    async def make_collection(self, driver: VectorStorePort) -> AsyncIterator[MakeCollection]:
        """Create collections with random names; drop them when the test ends."""
        made: list[str] = []

        async def make(dim: int, distance: Distance) -> str:
            name = f"contract_{uuid.uuid4().hex[:12]}"
            await driver.create_collection(name, dim, distance)
            made.append(name)
            return name

        try:
            yield make
        finally:
            for name in made:
                await driver.delete_collection(name)

    def _assert_matches(
        self, got: Sequence[ScoredPoint], expected: list[tuple[str, float]]
    ) -> None:
        assert [p.id for p in got] == [point_id for point_id, _ in expected]
        for point, (_, score) in zip(got, expected, strict=True):
            assert point.score == pytest.approx(score, rel=self.score_tolerance, abs=1e-6)

    async def test_satisfies_the_port(self, driver: VectorStorePort) -> None:
        assert isinstance(driver, VectorStorePort)

    async def test_collection_lifecycle(
        self, driver: VectorStorePort, make_collection: MakeCollection
    ) -> None:
        name = await make_collection(4, "cosine")
        names = await driver.list_collections()
        assert name in names
        assert names == sorted(names)
        assert await driver.count(name) == 0
        assert await driver.delete_collection(name) is True
        assert name not in await driver.list_collections()
        assert await driver.delete_collection(name) is False

    async def test_creating_an_existing_collection_is_a_conflict(
        self, driver: VectorStorePort, make_collection: MakeCollection
    ) -> None:
        name = await make_collection(4, "dot")
        with pytest.raises(Conflict):
            await driver.create_collection(name, 4, "dot")

    async def test_create_refuses_bad_arguments(self, driver: VectorStorePort) -> None:
        with pytest.raises(BadRequest):
            await driver.create_collection("no spaces or !", 4, "cosine")
        with pytest.raises(BadRequest):
            await driver.create_collection("", 4, "cosine")
        with pytest.raises(BadRequest):
            await driver.create_collection(f"c_{uuid.uuid4().hex[:12]}", 0, "cosine")
        bad_distance: Any = "manhattan"
        with pytest.raises(BadRequest):
            await driver.create_collection(f"c_{uuid.uuid4().hex[:12]}", 4, bad_distance)

    async def test_unknown_collection_is_not_found(self, driver: VectorStorePort) -> None:
        name = f"missing_{uuid.uuid4().hex[:12]}"
        point = Point(id="a", vector=[1.0, 0.0])
        with pytest.raises(NotFound):
            await driver.upsert(name, [point])
        with pytest.raises(NotFound):
            await driver.search(name, [1.0, 0.0], 3)
        with pytest.raises(NotFound):
            await driver.delete(name, ["a"])
        with pytest.raises(NotFound):
            await driver.count(name)

    async def test_upsert_replaces_by_id(
        self, driver: VectorStorePort, make_collection: MakeCollection
    ) -> None:
        name = await make_collection(3, "cosine")
        await driver.upsert(
            name,
            [
                Point(id="a", vector=[1.0, 0.0, 0.0], payload={"v": 1}),
                Point(id="b", vector=(0.0, 1.0, 0.0)),
            ],
        )
        await driver.upsert(name, [Point(id="a", vector=[0.0, 0.0, 1.0], payload={"v": 2})])
        assert await driver.count(name) == 2
        (best,) = await driver.search(name, [0.0, 0.0, 1.0], 1)
        assert (best.id, best.payload) == ("a", {"v": 2})
        assert best.score == pytest.approx(1.0, abs=self.score_tolerance)

    async def test_payload_round_trips(
        self, driver: VectorStorePort, make_collection: MakeCollection
    ) -> None:
        name = await make_collection(2, "dot")
        payload = {"text": "ünïcode", "n": 3, "x": 0.5, "ok": True, "tags": ["a", "b"]}
        await driver.upsert(name, [Point(id="doc-1", vector=[1.0, 2.0], payload=payload)])
        (hit,) = await driver.search(name, [1.0, 1.0], 5)
        assert hit.id == "doc-1"
        assert hit.payload == payload

    async def test_wrong_dimension_is_unprocessable(
        self, driver: VectorStorePort, make_collection: MakeCollection
    ) -> None:
        name = await make_collection(3, "euclid")
        await driver.upsert(name, [Point(id="ok", vector=[1.0, 2.0, 3.0])])
        batch = [
            Point(id="fine", vector=[0.0, 0.0, 1.0]),
            Point(id="short", vector=[1.0, 2.0]),
        ]
        with pytest.raises(Unprocessable):
            await driver.upsert(name, batch)
        assert await driver.count(name) == 1
        with pytest.raises(Unprocessable):
            await driver.search(name, [1.0, 2.0, 3.0, 4.0], 1)

    async def test_non_finite_values_are_unprocessable(
        self, driver: VectorStorePort, make_collection: MakeCollection
    ) -> None:
        name = await make_collection(2, "dot")
        with pytest.raises(Unprocessable):
            await driver.upsert(name, [Point(id="nan", vector=[math.nan, 1.0])])
        with pytest.raises(Unprocessable):
            await driver.search(name, [math.inf, 1.0], 1)
        assert await driver.count(name) == 0

    @pytest.mark.parametrize("distance", ["cosine", "dot", "euclid"])
    async def test_search_equals_brute_force(
        self, driver: VectorStorePort, make_collection: MakeCollection, distance: Distance
    ) -> None:
        name = await make_collection(DIM, distance)
        points = _random_points(seed=20240611)
        for start in range(0, SIZE, 100):
            await driver.upsert(name, points[start : start + 100])
        assert await driver.count(name) == SIZE
        rng = random.Random(7)
        for _ in range(5):
            query = [rng.gauss(0.0, 1.0) for _ in range(DIM)]
            got = await driver.search(name, query, TOP_K)
            self._assert_matches(got, _brute_force(points, query, distance, TOP_K))

    @pytest.mark.parametrize(
        "where", [{"group": 1}, {"parity": "odd"}, {"group": 2, "parity": "even"}]
    )
    async def test_filter_keeps_equal_payloads(
        self,
        driver: VectorStorePort,
        make_collection: MakeCollection,
        where: dict[str, Any],
    ) -> None:
        name = await make_collection(DIM, "cosine")
        points = _random_points(seed=99)
        await driver.upsert(name, points)
        query = [float(i % 5) - 2.0 for i in range(DIM)]
        got = await driver.search(name, query, TOP_K, filter=where)
        self._assert_matches(got, _brute_force(points, query, "cosine", TOP_K, where))
        assert all(p.payload[k] == v for p in got for k, v in where.items())

    async def test_filter_on_an_absent_key_matches_nothing(
        self, driver: VectorStorePort, make_collection: MakeCollection
    ) -> None:
        name = await make_collection(2, "dot")
        await driver.upsert(name, [Point(id="a", vector=[1.0, 0.0], payload={"k": "v"})])
        assert await driver.search(name, [1.0, 0.0], 5, filter={"other": "v"}) == []
        assert await driver.search(name, [1.0, 0.0], 5, filter={"k": "w"}) == []

    async def test_top_k_bounds_the_results(
        self, driver: VectorStorePort, make_collection: MakeCollection
    ) -> None:
        name = await make_collection(2, "euclid")
        assert await driver.search(name, [0.0, 0.0], 3) == []
        await driver.upsert(name, [Point(id=str(n), vector=[float(n), 0.0]) for n in range(1, 4)])
        got = await driver.search(name, [0.0, 0.0], 10)
        assert [p.id for p in got] == ["1", "2", "3"]
        assert [p.score for p in got] == pytest.approx([1.0, 2.0, 3.0])
        assert len(await driver.search(name, [0.0, 0.0], 1)) == 1
        with pytest.raises(BadRequest):
            await driver.search(name, [0.0, 0.0], 0)

    async def test_delete_counts_the_points_it_removed(
        self, driver: VectorStorePort, make_collection: MakeCollection
    ) -> None:
        name = await make_collection(2, "dot")
        await driver.upsert(
            name, [Point(id=i, vector=[1.0, float(n)]) for n, i in enumerate("abcd")]
        )
        assert await driver.delete(name, ["a", "c", "missing"]) == 2
        assert await driver.delete(name, ["a"]) == 0
        assert await driver.count(name) == 2
        got = await driver.search(name, [0.0, 1.0], 10)
        assert sorted(p.id for p in got) == ["b", "d"]

    async def test_collections_are_independent(
        self, driver: VectorStorePort, make_collection: MakeCollection
    ) -> None:
        first = await make_collection(2, "dot")
        second = await make_collection(3, "dot")
        await driver.upsert(first, [Point(id="x", vector=[1.0, 1.0])])
        assert await driver.count(second) == 0
        assert await driver.search(second, [1.0, 1.0, 1.0], 5) == []

    async def test_ping(self, driver: VectorStorePort) -> None:
        assert await driver.ping() is True

    async def test_close_twice_is_harmless(self) -> None:
        store = await self.make_driver()
        await store.close()
        await store.close()
