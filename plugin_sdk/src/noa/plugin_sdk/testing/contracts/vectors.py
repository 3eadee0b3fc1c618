"""The contract every ``noa.drivers.vectors`` driver passes.

Subclass :class:`VectorStoreContract` and implement
:meth:`~VectorStoreContract.make_driver`; a driver that keeps its data across a restart
also implements :meth:`~VectorStoreContract.reopen_driver`, and an approximate one may
lower :attr:`~VectorStoreContract.min_recall_at_10`. Each test works in collections under
random names and deletes them afterwards, so a shared server is safe.

Search results are compared with an exact brute-force search: in plain Python over a
seeded random set of 500 vectors of 16 dimensions, and in NumPy over a seeded set of
10,000 vectors of 64 dimensions. Filters are evaluated here independently of the port's
own helpers, so a shared mistake there still fails.
"""

from __future__ import annotations

import abc
import math
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import pytest
from noa.plugin_sdk.errors import BadRequest, Conflict, NotFound, Unprocessable
from noa.plugin_sdk.ports.vectors import (
    CollectionInfo,
    Distance,
    FieldType,
    Point,
    ScoredPoint,
    VectorStorePort,
)
from noa.plugin_sdk.testing.contracts._vector_sets import (
    DIM,
    FIELDS,
    SCALE_DIM,
    SCALE_FIELDS,
    SCALE_FILTERS,
    SCALE_QUERIES,
    SCALE_SIZE,
    SIZE,
    TOP_K,
    _brute_force,
    _exact_scores,
    _keeps,
    _random_points,
    _scale_set,
)

if TYPE_CHECKING:
    pass

__all__ = ["VectorStoreContract"]


class MakeCollection(Protocol):
    def __call__(
        self, dim: int, distance: Distance, fields: Mapping[str, FieldType] | None = None
    ) -> Awaitable[str]: ...


class VectorStoreContract(abc.ABC):
    """Behaviour shared by every vector store driver."""

    # Scores are compared to a float64 brute force; float32 engines are this close.
    score_tolerance = 1e-4
    # An approximate index may lower this to 0.99: the mean recall@10 it must reach on
    # 10,000 vectors. At 1.0 every top 10 equals brute force, in order.
    min_recall_at_10: float = 1.0

    @abc.abstractmethod
    async def make_driver(self) -> VectorStorePort:
        """A new store of the driver under test, connected and ready."""

    async def reopen_driver(self, driver: VectorStorePort) -> VectorStorePort | None:
        """A new store over the data ``driver`` kept, which the test has just closed
        (the same directory for an embedded store, a new connection for a server).

        The default, ``None``, says the driver keeps nothing across restarts and skips
        the restart test.
        """
        return None

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

        async def make(
            dim: int, distance: Distance, fields: Mapping[str, FieldType] | None = None
        ) -> str:
            name = f"contract_{uuid.uuid4().hex[:12]}"
            await driver.create_collection(name, dim, distance, fields)
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

    def _assert_recall(
        self,
        got: Sequence[Sequence[ScoredPoint]],
        expected: Sequence[Sequence[tuple[str, float]]],
        exact: Sequence[Mapping[str, float]],
    ) -> None:
        """Every score is right and best first; then exact order, or enough recall."""
        for hits, scored in zip(got, exact, strict=True):
            for hit in hits:
                assert hit.score == pytest.approx(
                    scored[hit.id], rel=self.score_tolerance, abs=1e-6
                )
            scores = [hit.score for hit in hits]
            assert scores == sorted(scores, reverse=True)
        if self.min_recall_at_10 >= 1.0:
            for hits, best in zip(got, expected, strict=True):
                self._assert_matches(hits, list(best))
            return
        recalls = [
            len({h.id for h in hits} & {i for i, _ in best}) / len(best) if best else 1.0
            for hits, best in zip(got, expected, strict=True)
        ]
        assert not any(hits for hits, best in zip(got, expected, strict=True) if not best)
        assert math.fsum(recalls) / len(recalls) >= self.min_recall_at_10

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

    async def test_collection_info_reports_fields_and_count(
        self, driver: VectorStorePort, make_collection: MakeCollection
    ) -> None:
        fields: dict[str, FieldType] = {
            "lang": "keyword",
            "year": "integer",
            "score": "float",
            "draft": "bool",
        }
        name = await make_collection(4, "dot", fields)
        info = await driver.collection_info(name)
        assert info == CollectionInfo(name=name, dim=4, distance="dot", fields=fields, count=0)
        await driver.upsert(
            name, [Point(id=str(n), vector=[1.0, 0.0, 0.0, float(n)]) for n in range(3)]
        )
        assert (await driver.collection_info(name)).count == 3
        plain = await make_collection(2, "euclid")
        assert await driver.collection_info(plain) == CollectionInfo(
            name=plain, dim=2, distance="euclid", fields={}, count=0
        )

    async def test_field_limits_are_accepted(
        self, driver: VectorStorePort, make_collection: MakeCollection
    ) -> None:
        fields: dict[str, FieldType] = {f"f{n}": "integer" for n in range(63)}
        fields["_" + "x" * 62] = "keyword"
        name = await make_collection(2, "cosine", fields)
        assert (await driver.collection_info(name)).fields == fields

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

    @pytest.mark.parametrize(
        "fields",
        [
            {"1abc": "keyword"},
            {"has space": "keyword"},
            {"a-b": "keyword"},
            {"": "keyword"},
            {"a" * 64: "keyword"},
            {"ok": "text"},
            {"ok": "int"},
            {f"f{n}": "bool" for n in range(65)},
        ],
        ids=["digit", "space", "dash", "empty", "long", "text", "int", "65-fields"],
    )
    async def test_create_refuses_bad_fields(
        self, driver: VectorStorePort, fields: dict[str, Any]
    ) -> None:
        name = f"c_{uuid.uuid4().hex[:12]}"
        with pytest.raises(BadRequest):
            await driver.create_collection(name, 4, "cosine", fields)
        assert name not in await driver.list_collections()

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
        with pytest.raises(NotFound):
            await driver.collection_info(name)

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
        name = await make_collection(2, "dot", {"n": "integer", "x": "float"})
        payload = {"text": "ünïcode", "n": 3, "x": 0.5, "ok": True, "tags": ["a", "b"]}
        await driver.upsert(name, [Point(id="doc-1", vector=[1.0, 2.0], payload=payload)])
        (hit,) = await driver.search(name, [1.0, 1.0], 5)
        assert hit.id == "doc-1"
        assert hit.payload == payload

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("year", True),
            ("year", 1.5),
            ("year", "2024"),
            ("score", "0.5"),
            ("score", math.inf),
            ("score", False),
            ("draft", 1),
            ("draft", "true"),
            ("lang", 3),
            ("lang", ["en"]),
            ("lang", None),
        ],
    )
    async def test_wrong_payload_type_is_unprocessable(
        self, driver: VectorStorePort, make_collection: MakeCollection, field: str, value: Any
    ) -> None:
        fields: dict[str, FieldType] = {
            "lang": "keyword",
            "year": "integer",
            "score": "float",
            "draft": "bool",
        }
        name = await make_collection(2, "cosine", fields)
        good = {"lang": "en", "year": 2024, "score": 3, "draft": False, "extra": [1, None]}
        batch = [
            Point(id="good", vector=[1.0, 0.0], payload=good),
            Point(id="bare", vector=[0.0, 1.0]),
            Point(id="bad-1", vector=[1.0, 1.0], payload={**good, field: value}),
        ]
        with pytest.raises(Unprocessable) as caught:
            await driver.upsert(name, batch)
        assert "bad-1" in str(caught.value)
        assert repr(field) in str(caught.value)
        assert await driver.count(name) == 0
        await driver.upsert(name, batch[:2])
        hits = await driver.search(name, [1.0, 0.0], 5)
        assert {hit.id: hit.payload for hit in hits} == {"good": good, "bare": {}}

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
        "where",
        [
            {"group": 1},
            {"parity": "odd"},
            {"group": 2, "parity": "even"},
            {"group": 1.0},
            {"flag": True},
            {"group": {"gt": 0}},
            {"group": {"lte": 1.5}},
            {"rank": {"gte": 0.25, "lt": 0.75}},
            {"rank": {"gt": 0.98}},
            {"rank": {"gt": 2}},
            {"parity": {"any": ["odd", "none"]}},
            {"group": {"any": [0, 2.0]}},
            {"flag": {"any": [False]}, "rank": {"lte": 0.5}, "group": {"any": [1, 2]}},
        ],
        ids=str,
    )
    async def test_filter_equals_brute_force(
        self,
        driver: VectorStorePort,
        make_collection: MakeCollection,
        where: dict[str, Any],
    ) -> None:
        name = await make_collection(DIM, "cosine", FIELDS)
        points = _random_points(seed=99)
        await driver.upsert(name, points)
        query = [float(i % 5) - 2.0 for i in range(DIM)]
        got = await driver.search(name, query, TOP_K, filter=where)
        self._assert_matches(got, _brute_force(points, query, "cosine", TOP_K, where))
        assert all(_keeps(where, p.payload) for p in got)

    async def test_filter_on_a_missing_or_undeclared_field(
        self, driver: VectorStorePort, make_collection: MakeCollection
    ) -> None:
        name = await make_collection(2, "dot", {"k": "keyword", "other": "keyword", "n": "float"})
        await driver.upsert(name, [Point(id="a", vector=[1.0, 0.0], payload={"k": "v", "u": 1})])
        assert await driver.search(name, [1.0, 0.0], 5, filter={"other": "v"}) == []
        assert await driver.search(name, [1.0, 0.0], 5, filter={"n": {"gte": 0}}) == []
        assert await driver.search(name, [1.0, 0.0], 5, filter={"k": "w"}) == []
        assert len(await driver.search(name, [1.0, 0.0], 5, filter={"k": "v"})) == 1
        with pytest.raises(Unprocessable) as caught:
            await driver.search(name, [1.0, 0.0], 5, filter={"u": 1})
        assert "unknown field 'u'" in str(caught.value)
        plain = await make_collection(2, "dot")
        with pytest.raises(Unprocessable):
            await driver.search(plain, [1.0, 0.0], 5, filter={"k": "v"})

    @pytest.mark.parametrize(
        ("where", "field"),
        [
            ({"nope": 1}, "nope"),
            ({"group": {"between": [1, 2]}}, "group"),
            ({"group": {}}, "group"),
            ({"group": {"any": [1], "gte": 0}}, "group"),
            ({"parity": {"gte": "a"}}, "parity"),
            ({"flag": {"lt": 1}}, "flag"),
            ({"group": "one"}, "group"),
            ({"group": True}, "group"),
            ({"parity": 3}, "parity"),
            ({"parity": ["odd"]}, "parity"),
            ({"flag": 1}, "flag"),
            ({"rank": None}, "rank"),
            ({"group": {"any": []}}, "group"),
            ({"group": {"any": [1, "x"]}}, "group"),
            ({"group": {"any": 1}}, "group"),
            ({"group": {"any": list(range(1025))}}, "group"),
            ({"rank": {"gte": "0.5"}}, "rank"),
            ({"rank": {"gte": math.nan}}, "rank"),
            ({"rank": {"lt": True}}, "rank"),
        ],
        ids=str,
    )
    async def test_invalid_filter_is_unprocessable(
        self,
        driver: VectorStorePort,
        make_collection: MakeCollection,
        where: dict[str, Any],
        field: str,
    ) -> None:
        name = await make_collection(DIM, "cosine", FIELDS)
        await driver.upsert(name, _random_points(seed=3)[:20])
        with pytest.raises(Unprocessable) as caught:
            await driver.search(name, [1.0] * DIM, TOP_K, filter=where)
        assert repr(field) in str(caught.value)

    @pytest.mark.parametrize("distance", ["cosine", "dot"])
    async def test_search_at_scale_equals_brute_force(
        self, driver: VectorStorePort, make_collection: MakeCollection, distance: Distance
    ) -> None:
        import numpy as np

        name = await make_collection(SCALE_DIM, distance, SCALE_FIELDS)
        matrix, points = _scale_set(seed=1011)
        for start in range(0, SCALE_SIZE, 1000):
            await driver.upsert(name, points[start : start + 1000])
        assert await driver.count(name) == SCALE_SIZE
        queries = np.random.default_rng(12).standard_normal((SCALE_QUERIES, SCALE_DIM))
        got, expected, exact = [], [], []
        for query in queries:
            got.append(await driver.search(name, query.tolist(), TOP_K))
            scores = _exact_scores(matrix, query, distance)
            best = np.argsort(-scores, kind="stable")[:TOP_K]
            expected.append([(points[i].id, float(scores[i])) for i in best])
            exact.append({hit.id: float(scores[int(hit.id[1:])]) for hit in got[-1]})
        self._assert_recall(got, expected, exact)

    @pytest.mark.parametrize("distance", ["cosine", "dot"])
    async def test_filtered_search_at_scale_equals_brute_force(
        self, driver: VectorStorePort, make_collection: MakeCollection, distance: Distance
    ) -> None:
        import numpy as np

        name = await make_collection(SCALE_DIM, distance, SCALE_FIELDS)
        matrix, points = _scale_set(seed=1011)
        for start in range(0, SCALE_SIZE, 1000):
            await driver.upsert(name, points[start : start + 1000])
        queries = np.random.default_rng(13).standard_normal((SCALE_QUERIES, SCALE_DIM))
        got, expected, exact = [], [], []
        for number, query in enumerate(queries):
            where = SCALE_FILTERS[number % len(SCALE_FILTERS)]
            hits = await driver.search(name, query.tolist(), TOP_K, filter=where)
            for hit in hits:
                assert hit.payload == points[int(hit.id[1:])].payload
                assert _keeps(where, hit.payload), (where, hit)
            kept = np.array([_keeps(where, point.payload) for point in points])
            scores = _exact_scores(matrix, query, distance)
            indexes = np.flatnonzero(kept)
            best = indexes[np.argsort(-scores[indexes], kind="stable")[:TOP_K]]
            got.append(hits)
            expected.append([(points[i].id, float(scores[i])) for i in best])
            exact.append({hit.id: float(scores[int(hit.id[1:])]) for hit in hits})
        self._assert_recall(got, expected, exact)

    async def test_data_survives_a_restart(self, driver: VectorStorePort) -> None:
        if type(self).reopen_driver is VectorStoreContract.reopen_driver:
            pytest.skip("the driver keeps nothing across restarts")
        name, empty = (f"contract_{uuid.uuid4().hex[:12]}" for _ in range(2))
        await driver.create_collection(name, DIM, "cosine", FIELDS)
        await driver.create_collection(empty, 3, "euclid")
        points = _random_points(seed=31)
        for start in range(0, SIZE, 100):
            await driver.upsert(name, points[start : start + 100])
        replaced = Point(id="p0", vector=points[0].vector[::-1], payload={"note": "replaced"})
        await driver.upsert(name, [replaced])
        await driver.delete(name, ["p1", "p2", "p3"])
        kept = [replaced, *points[4:]]
        await driver.close()
        store = await self.reopen_driver(driver)
        if store is None:
            cleanup = await self.make_driver()
            for dropped in (name, empty):
                await cleanup.delete_collection(dropped)
            await cleanup.close()
            pytest.skip("the driver keeps nothing across restarts")
        try:
            assert {name, empty} <= set(await store.list_collections())
            assert await store.collection_info(name) == CollectionInfo(
                name=name, dim=DIM, distance="cosine", fields=FIELDS, count=len(kept)
            )
            assert await store.collection_info(empty) == CollectionInfo(
                name=empty, dim=3, distance="euclid", fields={}, count=0
            )
            rng = random.Random(8)
            for where in (None, {"parity": "odd", "rank": {"lt": 0.5}}):
                query = [rng.gauss(0.0, 1.0) for _ in range(DIM)]
                got = await store.search(name, query, TOP_K, filter=where)
                self._assert_matches(got, _brute_force(kept, query, "cosine", TOP_K, where))
                by_id = {point.id: point.payload for point in kept}
                assert all(hit.payload == by_id[hit.id] for hit in got)
            (hit,) = await store.search(name, replaced.vector, 1)
            assert (hit.id, hit.payload) == ("p0", {"note": "replaced"})
            await store.upsert(name, [Point(id="new", vector=[1.0] * DIM)])
            assert await store.count(name) == len(kept) + 1
        finally:
            for dropped in (name, empty):
                await store.delete_collection(dropped)
            await store.close()

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
