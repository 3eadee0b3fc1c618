"""The retrieval API end to end on the embedded profile: collections behind aliases,
documents ingested through the real default model, search by text and by vector, the
errors a client can cause, and an alias moved under concurrent searches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from noa.plugin_sdk.testing.harness import KernelUnderTest, boot

PLUGINS = ["http", "observability", "storage", "inference", "retrieval"]

ANIMALS = [
    {
        "id": "cat",
        "text": "Cats purr when they are content and sleep most of the day.",
        "metadata": {"kind": "mammal", "legs": 4, "weight": 4.5},
    },
    {
        "id": "dog",
        "text": "Dogs bark at strangers and love to fetch sticks in the park.",
        "metadata": {"kind": "mammal", "legs": 4, "weight": 30.0},
    },
    {
        "id": "eagle",
        "text": "Eagles soar high above mountains, hunting with sharp eyes.",
        "metadata": {"kind": "bird", "legs": 2, "weight": 6.0},
    },
    {
        "id": "salmon",
        "text": "Salmon swim upstream against the current to spawn in rivers.",
        "metadata": {"kind": "fish", "legs": 0, "weight": 5.0},
    },
]
FIELDS = {"kind": "keyword", "legs": "integer", "weight": "float"}


async def wait_ready(client: Any) -> None:
    for _ in range(600):
        if (await client.get("/ready")).status_code == 200:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the server never became ready")


@pytest.fixture
async def server(data_dir: str, model_repository: Path) -> AsyncIterator[KernelUnderTest]:
    config = {
        "server": {"data_dir": data_dir},
        "inference": {"repository": str(model_repository)},
    }
    async with boot(PLUGINS, config=config) as kernel:
        await wait_ready(kernel.client)
        yield kernel


async def create(client: Any, name: str, **extra: Any) -> dict[str, Any]:
    response = await client.post("/v1/collections", json={"name": name, "fields": FIELDS, **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def ingest(client: Any, name: str, documents: list[dict[str, Any]]) -> dict[str, Any]:
    response = await client.post(f"/v1/collections/{name}/documents", json={"documents": documents})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def search(client: Any, **query: Any) -> dict[str, Any]:
    response = await client.post("/v1/search", json=query)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_text_in_relevant_passages_out(server: KernelUnderTest) -> None:
    client = server.client
    created = await create(client, "animals-v1", alias="animals")
    assert created["aliases"] == ["animals"]
    assert created["dim"] == 384
    assert created["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert created["fields"] == {**FIELDS, "document_id": "keyword"}

    report = await ingest(client, "animals", ANIMALS)
    assert (report["ingested"], report["skipped"], report["failed"]) == (4, 0, [])
    assert report["collection"] == "animals-v1"

    found = await search(client, collection="animals", text="which pet makes a purring sound?")
    best = found["hits"][0]
    assert best["document_id"] == "cat"
    assert best["id"] == "cat#0"
    assert best["text"] == ANIMALS[0]["text"]
    assert best["metadata"] == ANIMALS[0]["metadata"]
    assert (best["start"], best["end"]) == (0, len(ANIMALS[0]["text"]))
    assert found["collection"] == "animals-v1"
    scores = [h["score"] for h in found["hits"]]
    assert scores == sorted(scores, reverse=True)

    flying = await search(client, collection="animals", text="a bird of prey", top_k=2)
    assert flying["hits"][0]["document_id"] == "eagle"
    assert len(flying["hits"]) == 2


async def test_filters_and_threshold(server: KernelUnderTest) -> None:
    client = server.client
    await create(client, "zoo")
    await ingest(client, "zoo", ANIMALS)
    query = "an animal"

    def ids(body: dict[str, Any]) -> set[str]:
        return {h["document_id"] for h in body["hits"]}

    assert ids(await search(client, collection="zoo", text=query, filter={"kind": "mammal"})) == {
        "cat",
        "dog",
    }
    assert ids(await search(client, collection="zoo", text=query, filter={"legs": {"lt": 4}})) == {
        "eagle",
        "salmon",
    }
    assert ids(
        await search(
            client, collection="zoo", text=query, filter={"kind": {"any": ["bird", "fish"]}}
        )
    ) == {"eagle", "salmon"}
    assert ids(
        await search(client, collection="zoo", text=query, filter={"weight": {"gte": 5, "lte": 6}})
    ) == {"eagle", "salmon"}
    assert ids(
        await search(client, collection="zoo", text=query, filter={"document_id": "dog"})
    ) == {"dog"}
    everything = await search(client, collection="zoo", text="cats purr")
    cut = everything["hits"][1]["score"]
    kept = await search(client, collection="zoo", text="cats purr", score_threshold=cut)
    assert [h["id"] for h in kept["hits"]] == [h["id"] for h in everything["hits"][:2]]


async def test_search_by_vector(server: KernelUnderTest) -> None:
    client = server.client
    await create(client, "by-vector")
    await ingest(client, "by-vector", ANIMALS)
    embedded = await client.post("/v1/embed", json={"input": ANIMALS[3]["text"]})
    vector = embedded.json()["embeddings"][0]
    found = await search(client, collection="by-vector", vector=vector, top_k=1)
    assert found["hits"][0]["document_id"] == "salmon"
    assert found["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)


async def test_reingesting_replaces_and_unchanged_is_skipped(server: KernelUnderTest) -> None:
    client = server.client
    await create(client, "docs", chunking={"mode": "sentences", "size": 60, "overlap": 0})
    long_text = " ".join(f"Sentence number {i} talks about topic {i}." for i in range(12))
    first = await ingest(client, "docs", [{"id": "d", "text": long_text}])
    assert first["ingested"] == 1 and first["chunks"] > 3
    again = await ingest(client, "docs", [{"id": "d", "text": long_text}])
    assert (again["ingested"], again["skipped"]) == (0, 1)

    shorter = await ingest(client, "docs", [{"id": "d", "text": "Now a single short sentence."}])
    assert (shorter["ingested"], shorter["chunks"]) == (1, 1)
    info = (await client.get("/v1/collections/docs")).json()
    assert info["points"] == 1
    found = await search(client, collection="docs", text="topic", top_k=50)
    assert [h["text"] for h in found["hits"]] == ["Now a single short sentence."]

    assert (await client.delete("/v1/collections/docs/documents/d")).status_code == 204
    assert (await client.get("/v1/collections/docs")).json()["points"] == 0
    missing = await client.delete("/v1/collections/docs/documents/d")
    assert missing.status_code == 404


async def test_bad_documents_fail_alone(server: KernelUnderTest) -> None:
    client = server.client
    await create(client, "mixed")
    report = await ingest(
        client,
        "mixed",
        [
            {"id": "good", "text": "A perfectly fine document."},
            {"id": "typed", "text": "Legs must be an integer.", "metadata": {"legs": "four"}},
            {"id": "reserved", "text": "Text is reserved.", "metadata": {"text": "x"}},
            {"id": "blank", "text": "   "},
            {"id": "good", "text": "The same id again."},
        ],
    )
    assert report["ingested"] == 1
    failed = {f["id"]: f["code"] for f in report["failed"]}
    assert failed == {
        "typed": failed["typed"],
        "reserved": "reserved_key",
        "blank": "empty_text",
        "good": "duplicate_id",
    }
    assert "legs" in next(f["message"] for f in report["failed"] if f["id"] == "typed")
    assert (await client.get("/v1/collections/mixed")).json()["points"] == 1


async def test_client_mistakes_get_clear_errors(server: KernelUnderTest) -> None:
    client = server.client
    await create(client, "errs", alias="errs-alias")
    await ingest(client, "errs", ANIMALS[:1])

    async def error(method: str, url: str, status: int, **kwargs: Any) -> dict[str, Any]:
        response = await client.request(method, url, **kwargs)
        assert response.status_code == status, response.text
        body: dict[str, Any] = response.json()["error"]
        assert body["message"]
        return body

    unknown = await error("POST", "/v1/search", 404, json={"collection": "nope", "text": "x"})
    assert unknown["code"] == "collection_not_found"
    wrong_dim = await error(
        "POST", "/v1/search", 422, json={"collection": "errs", "vector": [0.1, 0.2]}
    )
    assert "384" in wrong_dim["message"]
    await error(
        "POST",
        "/v1/search",
        422,
        json={"collection": "errs", "text": "x", "filter": {"color": "red"}},
    )
    await error("POST", "/v1/search", 400, json={"collection": "errs"})
    await error("POST", "/v1/search", 400, json={"collection": "errs", "text": "x", "top_k": 0})
    await error("POST", "/v1/collections", 409, json={"name": "errs-alias"})
    await error("POST", "/v1/collections", 409, json={"name": "errs"})
    await error("POST", "/v1/collections", 400, json={"name": "bad name!"})
    await error("POST", "/v1/collections", 422, json={"name": "x", "fields": {"text": "keyword"}})
    await error("POST", "/v1/collections", 422, json={"name": "x", "embedder": "nope"})
    await error("POST", "/v1/collections", 400, json={"name": "x", "chunking": {"size": 0}})
    in_use = await error("DELETE", "/v1/collections/errs", 409)
    assert "errs-alias" in in_use["message"]
    await error("DELETE", "/v1/collections/errs-alias", 409)
    await error("PUT", "/v1/aliases/errs-alias", 404, json={"collection": "nope"})
    await error("PUT", "/v1/aliases/errs", 409, json={"collection": "errs"})
    await error("DELETE", "/v1/aliases/nope", 404)
    await error("POST", "/v1/collections/nope/documents", 404, json={"documents": [ANIMALS[0]]})
    await error("POST", "/v1/collections/errs/documents", 400, json={"documents": "x"})


async def test_alias_swap_under_concurrent_searches(server: KernelUnderTest) -> None:
    """Searches run without pause while a re-indexed collection replaces the old one
    behind the alias and the old one is dropped: none fails, none comes back empty, and
    after the move they all come from the new collection."""
    client = server.client
    await create(client, "kb-v1", alias="kb")
    await ingest(client, "kb", ANIMALS)
    await create(client, "kb-v2", chunking={"mode": "characters", "size": 40, "overlap": 10})
    await ingest(client, "kb-v2", ANIMALS)

    answered: list[str] = []
    failures: list[str] = []
    stop = asyncio.Event()
    reached = asyncio.Event()
    target = 20

    async def searcher() -> None:
        while not stop.is_set():
            response = await client.post(
                "/v1/search", json={"collection": "kb", "text": "cats purr", "top_k": 3}
            )
            body = response.json()
            if response.status_code != 200 or not body["hits"]:
                failures.append(f"{response.status_code} {response.text}")
            else:
                answered.append(body["collection"])
            if len(answered) >= target:
                reached.set()

    searchers = [asyncio.create_task(searcher()) for _ in range(4)]
    try:
        await asyncio.wait_for(reached.wait(), 60)
        moved = await client.put("/v1/aliases/kb", json={"collection": "kb-v2"})
        assert moved.status_code == 200, moved.text
        assert moved.json() == {"alias": "kb", "collection": "kb-v2", "previous": "kb-v1"}
        dropped = await client.delete("/v1/collections/kb-v1")
        assert dropped.status_code == 204, dropped.text
        mark = len(answered)
        target = mark + 20 + len(searchers)
        reached.clear()
        await asyncio.wait_for(reached.wait(), 60)
    finally:
        stop.set()
        await asyncio.gather(*searchers)
    assert failures == []
    assert answered[0] == "kb-v1"
    # A search in flight at the move may still answer from kb-v1; the ones after can't.
    assert set(answered[mark + len(searchers) :]) == {"kb-v2"}
    listed = (await client.get("/v1/collections")).json()["collections"]
    assert [(c["name"], c["aliases"]) for c in listed] == [("kb-v2", ["kb"])]


async def test_openapi_documents_the_routes(server: KernelUnderTest) -> None:
    paths = (await server.client.get("/schema/openapi.json")).json()["paths"]
    for path in (
        "/v1/collections",
        "/v1/collections/{name}/documents",
        "/v1/search",
        "/v1/aliases/{name}",
    ):
        assert path in paths


async def test_an_unmigrated_catalog_is_503_naming_the_fix(
    tmp_path: Path, model_repository: Path
) -> None:
    config = {
        "server": {"data_dir": str(tmp_path / "bare")},
        "inference": {"repository": str(model_repository)},
    }
    async with boot(PLUGINS, config=config) as kernel:
        await wait_ready(kernel.client)
        for method, url, body in (
            ("POST", "/v1/collections", {"name": "c"}),
            ("POST", "/v1/search", {"collection": "c", "text": "x"}),
            ("GET", "/v1/aliases", None),
        ):
            response = await kernel.client.request(method, url, json=body)
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert error["code"] == "catalog_unavailable"
            assert "noa migrate apply" in error["message"]
