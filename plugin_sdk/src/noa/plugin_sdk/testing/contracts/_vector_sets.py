"""Seeded vector sets, an independent filter evaluator and exact brute-force search,
for the vectors contract suite (``vectors.py``)."""

from __future__ import annotations

import math
import operator
import random
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from noa.plugin_sdk.ports.vectors import Distance, FieldType, Point

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

DIM = 16
SIZE = 500
TOP_K = 10
FIELDS: dict[str, FieldType] = {
    "group": "integer",
    "parity": "keyword",
    "rank": "float",
    "flag": "bool",
}

SCALE_SIZE = 10_000
SCALE_DIM = 64
SCALE_QUERIES = 20
SCALE_FIELDS: dict[str, FieldType] = {"group": "integer", "tag": "keyword", "rank": "float"}
TAGS = ("red", "green", "blue", "cyan")
# Five queries each; the last keeps about five points, fewer than top_k.
SCALE_FILTERS: list[dict[str, Any]] = [
    {"group": 3},
    {"rank": {"lt": 0.02}},
    {"tag": {"any": ["red", "blue"]}, "rank": {"gte": 0.5}},
    {"group": {"any": [7]}, "rank": {"gte": 0.995}},
]

_RANGE: dict[str, Callable[[Any, Any], bool]] = {
    "gte": operator.ge,
    "gt": operator.gt,
    "lte": operator.le,
    "lt": operator.lt,
}


def _meets(condition: Any, value: Any) -> bool:
    if isinstance(condition, dict):
        if "any" in condition:
            return any(_meets(wanted, value) for wanted in condition["any"])
        return not isinstance(value, bool | str) and all(
            _RANGE[op](value, bound) for op, bound in condition.items()
        )
    if isinstance(condition, bool) or isinstance(value, bool):
        return type(condition) is type(value) and condition == value
    return bool(condition == value)


def _keeps(where: Mapping[str, Any] | None, payload: Mapping[str, Any]) -> bool:
    return all(key in payload and _meets(c, payload[key]) for key, c in (where or {}).items())


def _random_points(seed: int) -> list[Point]:
    rng = random.Random(seed)
    points = []
    for index in range(SIZE):
        vector = [rng.gauss(0.0, 1.0) for _ in range(DIM)]
        payload: dict[str, Any] = {
            "group": index % 3,
            "parity": "even" if index % 2 == 0 else "odd",
            "flag": index % 5 == 0,
            "note": f"point {index}",
        }
        rank = rng.random()
        if index % 7:
            payload["rank"] = rank
        points.append(Point(id=f"p{index}", vector=vector, payload=payload))
    return points


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

    scored = [(point.id, score(point.vector)) for point in points if _keeps(where, point.payload)]
    scored.sort(key=lambda item: item[1], reverse=distance != "euclid")
    return scored[:top_k]


def _scale_set(seed: int) -> tuple[NDArray[np.float64], list[Point]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((SCALE_SIZE, SCALE_DIM))
    tags = rng.integers(0, len(TAGS), SCALE_SIZE)
    ranks = rng.random(SCALE_SIZE)
    points = []
    for index, vector in enumerate(matrix.tolist()):
        payload: dict[str, Any] = {"group": index % 10, "tag": TAGS[tags[index]]}
        if index % 13:
            payload["rank"] = float(ranks[index])
        points.append(Point(id=f"s{index}", vector=vector, payload=payload))
    return matrix, points


def _exact_scores(
    matrix: NDArray[np.float64], query: NDArray[np.float64], distance: Distance
) -> NDArray[np.float64]:
    import numpy as np

    scores = matrix @ query
    if distance == "cosine":
        scores /= np.linalg.norm(matrix, axis=1) * np.linalg.norm(query)
    return scores
