"""End to end through the real retrieval API: collections whose embedder is
``fastembed`` ingest documents and answer searches by text, next to the inference
plugin's embedder serving the same model from safetensors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from noa.plugin_sdk.testing.harness import KernelUnderTest, boot

PLUGINS = ["http", "observability", "storage", "inference", "retrieval", "fastembed"]
MINILM = "sentence-transformers/all-MiniLM-L6-v2"

DOCUMENTS = [
    {"id": "volcano", "text": "Lava erupts from the volcano and flows down its slopes."},
    {"id": "bread", "text": "Knead the dough, let it rise, then bake the loaf until golden."},
    {
        "id": "orbit",
        "text": "The satellite circles the planet on a low orbit every ninety minutes.",
    },
    {"id": "violin", "text": "She practised the violin concerto for hours before the recital."},
    {"id": "tax", "text": "File your income tax return before the April deadline to avoid fees."},
]
QUERIES = {
    "molten rock coming out of a mountain": "volcano",
    "how do I make a loaf at home?": "bread",
    "a spacecraft going around the earth": "orbit",
    "classical music performance with strings": "violin",
    "when must I submit my taxes?": "tax",
}


async def wait_ready(client: Any) -> None:
    for _ in range(600):
        if (await client.get("/ready")).status_code == 200:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the server never became ready")


@pytest.fixture
async def server(data_dir: str, onnx_dir: Path, tmp_path: Path) -> AsyncIterator[KernelUnderTest]:
    config = {
        "server": {"data_dir": data_dir},
        "inference": {"repository": str(tmp_path / "no-models")},
        "fastembed": {"models": {"minilm-onnx": str(onnx_dir)}},
    }
    async with boot(PLUGINS, config=config) as kernel:
        await wait_ready(kernel.client)
        yield kernel


async def post(client: Any, url: str, body: dict[str, Any], status: int = 200) -> Any:
    response = await client.post(url, json=body)
    assert response.status_code == status, response.text
    return response.json()


async def test_ingest_and_search_by_text_with_the_fastembed_embedder(
    server: KernelUnderTest,
) -> None:
    client = server.client
    created = await post(
        client,
        "/v1/collections",
        {"name": "facts", "embedder": "fastembed", "model": "minilm-onnx"},
        status=201,
    )
    assert (created["embedder"], created["model"], created["dim"]) == (
        "fastembed",
        "minilm-onnx",
        384,
    )
    report = await post(client, "/v1/collections/facts/documents", {"documents": DOCUMENTS})
    assert (report["ingested"], report["failed"]) == (5, [])

    for query, expected in QUERIES.items():
        found = await post(client, "/v1/search", {"collection": "facts", "text": query})
        assert found["hits"][0]["document_id"] == expected, (query, found["hits"][:2])
        scores = [hit["score"] for hit in found["hits"]]
        assert scores == sorted(scores, reverse=True)

    ready = (await client.get("/ready")).json()
    [check] = [c for c in ready["components"] if c["name"] == "fastembed"]
    assert (check["status"], check["detail"]) == ("ok", "ready: minilm-onnx")


async def test_its_default_model_chunking_by_tokens_and_client_errors(
    server: KernelUnderTest,
) -> None:
    client = server.client
    created = await post(
        client,
        "/v1/collections",
        {
            "name": "tokens",
            "embedder": "fastembed",
            "chunking": {"mode": "tokens", "size": 8, "overlap": 0},
        },
        status=201,
    )
    assert created["model"] == "minilm-onnx"
    report = await post(client, "/v1/collections/tokens/documents", {"documents": DOCUMENTS[:1]})
    assert report["ingested"] == 1
    points = (await client.get("/v1/collections/tokens")).json()["points"]
    assert points > 1, "an 11-token text in chunks of 8 tokens"

    unknown = await client.post(
        "/v1/collections", json={"name": "nope", "embedder": "fastembed", "model": "nope"}
    )
    assert unknown.status_code == 404, unknown.text
    error = unknown.json()["error"]
    assert (error["code"], error["message"]) == (
        "model_not_found",
        "no fastembed model named 'nope' (models: minilm-onnx)",
    )


async def test_it_ranks_like_the_inference_embedder_on_the_same_model(
    data_dir: str, onnx_dir: Path, minilm_dir: Path, tmp_path: Path
) -> None:
    repository = tmp_path / "models"
    (repository / "sentence-transformers").mkdir(parents=True)
    (repository / MINILM).symlink_to(minilm_dir, target_is_directory=True)
    config = {
        "server": {"data_dir": data_dir},
        "inference": {"repository": str(repository)},
        "fastembed": {"models": {"minilm-onnx": str(onnx_dir)}},
    }
    async with boot(PLUGINS, config=config) as kernel:
        client = kernel.client
        await wait_ready(client)
        for name, embedder, model in (
            ("via-fastembed", "fastembed", "minilm-onnx"),
            ("via-inference", "inference", MINILM),
        ):
            body = {"name": name, "embedder": embedder, "model": model}
            await post(client, "/v1/collections", body, status=201)
            await post(client, f"/v1/collections/{name}/documents", {"documents": DOCUMENTS})
        for query in QUERIES:
            hits = {}
            for name in ("via-fastembed", "via-inference"):
                found = await post(client, "/v1/search", {"collection": name, "text": query})
                hits[name] = [(h["document_id"], h["score"]) for h in found["hits"]]
            assert [d for d, _ in hits["via-fastembed"]] == [d for d, _ in hits["via-inference"]]
            for (_, a), (_, b) in zip(hits["via-fastembed"], hits["via-inference"], strict=True):
                assert a == pytest.approx(b, abs=1e-4)
