"""End-to-end retrieval quality of the default model on a small labelled set.

``data/retrieval_set.json`` was written for this project: 60 short passages on everyday
and technical topics (with distractors on neighbouring subjects) and 41 queries that
paraphrase rather than repeat their relevant passages. Passages and queries are embedded
by the inference plugin's ``POST /v1/embed`` with the real all-MiniLM-L6-v2, stored in
the embedded vector store and searched top 5; the test reports recall@5 and MRR
(``pytest -s`` prints them) and fails when they drop below a floor. A control search with
the query vectors shuffled across queries must score near chance, so the floor is not
met by the data alone.

The model is fetched by ``scripts/setup`` into ``.noa/models``, ``NOA_TEST_MODEL_DIR``
points elsewhere; as in the inference tests, a missing model skips outside CI and fails
under it (``CI=true``).
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from noa.builtin_plugins.retrieval.embedded import EmbeddedVectorStore
from noa.plugin_sdk.ports.vectors import Point
from noa.plugin_sdk.testing.harness import boot

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
ROOT = Path(__file__).resolve().parents[3]
DATA = Path(__file__).parent / "data" / "retrieval_set.json"
COLLECTION = "retrieval_set"
TOP_K = 5

# Measured on 2026-11-29 with all-MiniLM-L6-v2 on CPU: recall@5 = 1.000, MRR = 0.988.
# The floors sit 0.1 below: room for an equivalent numerical path (another device, batch
# size or search path) to reorder a near tie, not for five of the 41 queries to lose their answer.
RECALL_FLOOR = 0.90
MRR_FLOOR = 0.88
# With each query's vector swapped for another query's, the set scores near chance
# (measured 0.024 on 2026-11-29; 5 of 60 passages at random gives about 0.08).
SHUFFLED_RECALL_CEILING = 0.3
# A bag-of-words ranking on the same set (measured 0.463 on 2026-11-29): the queries
# paraphrase their passages, so word overlap alone does not solve the set.
LEXICAL_RECALL_CEILING = 0.6


class Passage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    topic: str
    text: str


class Query(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    text: str
    relevant: list[str]


class RetrievalSet(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    passages: list[Passage]
    queries: list[Query]


class Embedded(msgspec.Struct, frozen=True):
    passages: list[list[float]]
    queries: list[list[float]]


@pytest.fixture(scope="module")
def labelled() -> RetrievalSet:
    return msgspec.json.decode(DATA.read_bytes(), type=RetrievalSet)


@pytest.fixture(scope="module")
def embedded(labelled: RetrievalSet, model_repository: Path) -> Embedded:
    """Every passage and query embedded once per module by a kernel serving the model."""
    repository = model_repository
    passages = [p.text for p in labelled.passages]
    queries = [q.text for q in labelled.queries]
    return asyncio.run(_embed_through_the_api(repository, passages, queries))


async def _embed_through_the_api(
    repository: Path, passages: list[str], queries: list[str]
) -> Embedded:
    config = {"inference": {"repository": str(repository)}}
    async with boot(["http", "observability", "inference"], config=config) as kernel:
        await _wait_ready(kernel.client)
        return Embedded(
            passages=await _embed(kernel.client, passages),
            queries=await _embed(kernel.client, queries),
        )


async def _wait_ready(client: Any, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        response = await client.get("/ready")
        if response.status_code == 200:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not ready after {timeout_s} s: {response.text}")
        await asyncio.sleep(0.05)


async def _embed(client: Any, texts: list[str]) -> list[list[float]]:
    response = await client.post("/v1/embed", json={"input": texts, "normalize": True})
    assert response.status_code == 200, response.text
    vectors: list[list[float]] = response.json()["embeddings"]
    assert len(vectors) == len(texts)
    assert {len(v) for v in vectors} == {384}
    return vectors


@pytest.fixture
async def store(
    tmp_path: Path, labelled: RetrievalSet, embedded: Embedded
) -> AsyncIterator[EmbeddedVectorStore]:
    opened = EmbeddedVectorStore(tmp_path / "vectors")
    await opened.start()
    try:
        await opened.create_collection(COLLECTION, 384, "cosine", {"topic": "keyword"})
        points = [
            Point(id=p.id, vector=v, payload={"topic": p.topic, "text": p.text})
            for p, v in zip(labelled.passages, embedded.passages, strict=True)
        ]
        await opened.upsert(COLLECTION, points)
        yield opened
    finally:
        await opened.close()


def recall_at_k(ranked: Sequence[Sequence[str]], queries: Sequence[Query]) -> float:
    """Per query, the share of its relevant passages in its top ``TOP_K``; averaged."""
    shares = [
        len(set(ids[:TOP_K]) & set(q.relevant)) / len(q.relevant)
        for ids, q in zip(ranked, queries, strict=True)
    ]
    return sum(shares) / len(shares)


def mean_reciprocal_rank(ranked: Sequence[Sequence[str]], queries: Sequence[Query]) -> float:
    """Per query, 1 / the rank of its first relevant passage in the top ``TOP_K`` (0 when
    none is there); averaged."""
    total = 0.0
    for ids, query in zip(ranked, queries, strict=True):
        rank = next((n for n, i in enumerate(ids[:TOP_K], 1) if i in query.relevant), None)
        total += 1.0 / rank if rank else 0.0
    return total / len(queries)


async def _ranked(
    store: EmbeddedVectorStore,
    vectors: Sequence[Sequence[float]],
    filters: Sequence[dict[str, Any] | None] | None = None,
) -> list[list[str]]:
    filters = filters or [None] * len(vectors)
    ranked = []
    for vector, where in zip(vectors, filters, strict=True):
        hits = await store.search(COLLECTION, vector, TOP_K, filter=where)
        ranked.append([hit.id for hit in hits])
    return ranked


def _topics(labelled: RetrievalSet) -> dict[str, str]:
    return {p.id: p.topic for p in labelled.passages}


def test_the_set_is_well_formed(labelled: RetrievalSet) -> None:
    passage_ids = [p.id for p in labelled.passages]
    query_ids = [q.id for q in labelled.queries]
    assert len(set(passage_ids)) == len(passage_ids) >= 50
    assert len(set(query_ids)) == len(query_ids) >= 30
    for passage in labelled.passages:
        assert 20 <= len(passage.text.split()) <= 60, passage.id
    topics = _topics(labelled)
    for query in labelled.queries:
        assert 1 <= len(query.relevant) <= 3, query.id
        assert set(query.relevant) <= topics.keys(), query.id
        # One topic per query, so the filtered check below can only keep or gain hits.
        assert len({topics[i] for i in query.relevant}) == 1, query.id
    # Passages no query asks for sit beside the answers as distractors.
    wanted = {i for q in labelled.queries for i in q.relevant}
    assert len(topics.keys() - wanted) >= 10


def test_word_overlap_alone_does_not_solve_the_set(labelled: RetrievalSet) -> None:
    words = [_content_words(p.text) for p in labelled.passages]
    ranked = []
    for query in labelled.queries:
        asked = _content_words(query.text)
        scores = [len(asked & w) / len(asked | w) for w in words]
        order = sorted(range(len(words)), key=lambda n: -scores[n])
        ranked.append([labelled.passages[n].id for n in order[:TOP_K]])
    recall = recall_at_k(ranked, labelled.queries)
    print(f"\nretrieval set, bag-of-words Jaccard: recall@{TOP_K} = {recall:.3f}")
    assert recall < LEXICAL_RECALL_CEILING


_STOPWORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "how",
        "i",
        "in",
        "is",
        "it",
        "its",
        "my",
        "of",
        "on",
        "or",
        "so",
        "that",
        "the",
        "their",
        "there",
        "this",
        "to",
        "what",
        "when",
        "which",
        "why",
        "with",
    }
)


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOPWORDS}


async def test_the_default_model_finds_the_relevant_passages(
    store: EmbeddedVectorStore, labelled: RetrievalSet, embedded: Embedded
) -> None:
    ranked = await _ranked(store, embedded.queries)
    recall = recall_at_k(ranked, labelled.queries)
    mrr = mean_reciprocal_rank(ranked, labelled.queries)
    missed = [
        f"{q.id} {q.text!r}: wanted {q.relevant}, got {ids}"
        for ids, q in zip(ranked, labelled.queries, strict=True)
        if not set(q.relevant) <= set(ids)
    ]
    print(
        f"\nretrieval set ({len(labelled.passages)} passages, {len(labelled.queries)} queries), "
        f"{MODEL}: recall@{TOP_K} = {recall:.3f}, MRR = {mrr:.3f}"
    )
    for line in missed:
        print(f"  missed: {line}")
    assert recall >= RECALL_FLOOR, missed
    assert mrr >= MRR_FLOOR, missed


async def test_shuffled_query_vectors_score_near_chance(
    store: EmbeddedVectorStore, labelled: RetrievalSet, embedded: Embedded
) -> None:
    # A seeded derangement: no query keeps its own vector.
    order = list(range(len(embedded.queries)))
    rng = random.Random(20261129)
    while any(n == m for n, m in enumerate(order)):
        rng.shuffle(order)
    ranked = await _ranked(store, [embedded.queries[m] for m in order])
    recall = recall_at_k(ranked, labelled.queries)
    print(f"\nretrieval set, shuffled query vectors: recall@{TOP_K} = {recall:.3f}")
    assert recall < SHUFFLED_RECALL_CEILING


async def test_a_topic_filter_keeps_the_topic_and_loses_no_hit(
    store: EmbeddedVectorStore, labelled: RetrievalSet, embedded: Embedded
) -> None:
    topics = _topics(labelled)
    wanted = [topics[q.relevant[0]] for q in labelled.queries]
    ranked = await _ranked(store, embedded.queries, [{"topic": t} for t in wanted])
    for ids, topic in zip(ranked, wanted, strict=True):
        assert ids and {topics[i] for i in ids} == {topic}
    unfiltered = recall_at_k(await _ranked(store, embedded.queries), labelled.queries)
    filtered = recall_at_k(ranked, labelled.queries)
    print(f"\nretrieval set, filtered on the answer's topic: recall@{TOP_K} = {filtered:.3f}")
    # Exact search: a relevant passage in the top 5 of all stays in the top 5 of its topic.
    assert filtered >= unfiltered


async def test_end_to_end_through_the_retrieval_api(
    labelled: RetrievalSet, model_repository: Path, data_dir: str
) -> None:
    """The same set the way a user runs it: passages ingested as documents through
    ``POST /v1/collections/{name}/documents`` (chunked, embedded and stored by the
    server) and each query's text sent to ``POST /v1/search``."""
    config = {"server": {"data_dir": data_dir}, "inference": {"repository": str(model_repository)}}
    plugins = ["http", "observability", "storage", "inference", "retrieval"]
    async with boot(plugins, config=config) as kernel:
        client = kernel.client
        await _wait_ready(client)
        created = await client.post(
            "/v1/collections",
            json={"name": "set-v1", "alias": "set", "fields": {"topic": "keyword"}},
        )
        assert created.status_code == 201, created.text
        documents = [
            {"id": p.id, "text": p.text, "metadata": {"topic": p.topic}} for p in labelled.passages
        ]
        report = (
            await client.post("/v1/collections/set/documents", json={"documents": documents})
        ).json()
        assert (report["ingested"], report["failed"]) == (len(documents), [])
        ranked = []
        for query in labelled.queries:
            response = await client.post(
                "/v1/search", json={"collection": "set", "text": query.text, "top_k": 20}
            )
            assert response.status_code == 200, response.text
            # A passage may be cut into several chunks: rank documents by their best chunk.
            ids = list(dict.fromkeys(h["document_id"] for h in response.json()["hits"]))
            ranked.append(ids[:TOP_K])
    recall = recall_at_k(ranked, labelled.queries)
    mrr = mean_reciprocal_rank(ranked, labelled.queries)
    print(f"\nretrieval set through the API: recall@{TOP_K} = {recall:.3f}, MRR = {mrr:.3f}")
    assert recall >= RECALL_FLOOR
    assert mrr >= MRR_FLOOR
