"""The embedder's behaviour: errors by the Embedder protocol, limits, order, token spans,
start-up failures that name the model and folder, and no network at any point."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from noa.builtin_plugins.fastembed.config import FastembedConfig, ModelSpec
from noa.builtin_plugins.fastembed.embedder import FastembedEmbedder, ModelLoadError
from noa.plugin_sdk.embedding import Embedder
from noa.plugin_sdk.errors import (
    NotFound,
    PayloadTooLarge,
    PluginStartError,
    ServiceUnavailable,
    TooManyRequests,
)
from noa.plugin_sdk.testing.harness import boot


def config(onnx_dir: Path, **settings: Any) -> FastembedConfig:
    return FastembedConfig(models={"minilm": str(onnx_dir)}, threads=1, **settings)


@pytest.fixture
async def embedder(onnx_dir: Path) -> AsyncIterator[FastembedEmbedder]:
    started = FastembedEmbedder(config(onnx_dir, max_texts=8, max_chars=50))
    await started.start()
    yield started
    await started.close()


async def test_it_is_an_embedder_serving_its_configured_models(
    embedder: FastembedEmbedder,
) -> None:
    assert isinstance(embedder, Embedder)
    assert embedder.default_model() == "minilm"
    assert await embedder.dimension("minilm") == 384
    assert embedder.statuses() == {"minilm": "ready"}


async def test_vectors_come_back_in_input_order(embedder: FastembedEmbedder) -> None:
    texts = ["a much longer sentence about the weather", "short", "medium length text"]
    together = await embedder.embed("minilm", texts, "document")
    assert together.shape == (3, 384) and together.dtype == np.float32
    for row, text in enumerate(texts):
        alone = await embedder.embed("minilm", [text], "query")
        assert float(alone[0] @ together[row]) > 0.99999
    empty = await embedder.embed("minilm", [], "document")
    assert empty.shape == (0, 384)


async def test_an_unknown_model_is_not_found_listing_the_known_ones(
    embedder: FastembedEmbedder,
) -> None:
    for call in (
        embedder.embed("nope", ["x"], "query"),
        embedder.dimension("nope"),
    ):
        with pytest.raises(NotFound) as caught:
            await call
        assert caught.value.message == "no fastembed model named 'nope' (models: minilm)"
        assert (caught.value.status_code, caught.value.code) == (404, "model_not_found")
    with pytest.raises(NotFound):
        embedder.token_spans("nope")


async def test_limits_refuse_too_many_and_too_long_texts(embedder: FastembedEmbedder) -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        await embedder.embed("minilm", ["x"] * 9, "document")
    assert caught.value.message == "9 texts in one call; the fastembed embedder takes at most 8"
    assert (caught.value.status_code, caught.value.code) == (413, "too_many_texts")
    with pytest.raises(PayloadTooLarge) as caught:
        await embedder.embed("minilm", ["fine", "y" * 51], "document")
    assert caught.value.message == "text 1 has 51 characters; at most 50"
    assert caught.value.param == "texts[1]"
    assert (await embedder.embed("minilm", ["y" * 50] * 8, "document")).shape == (8, 384)


async def test_calls_beyond_the_waiting_limit_get_429(onnx_dir: Path) -> None:
    busy = FastembedEmbedder(config(onnx_dir, max_waiting=1))
    await busy.start()
    try:
        texts = ["some text to keep the worker busy for a moment"] * 64
        results = await asyncio.gather(
            *(busy.embed("minilm", texts, "document") for _ in range(3)),
            return_exceptions=True,
        )
    finally:
        await busy.close()
    # The first computes, the second waits, the third is refused at once.
    assert [type(r).__name__ for r in results] == ["ndarray", "ndarray", "TooManyRequests"]
    refused = results[2]
    assert isinstance(refused, TooManyRequests)
    assert refused.headers == {"Retry-After": "1"}


async def test_token_spans_are_the_models_tokens(embedder: FastembedEmbedder) -> None:
    spans = embedder.token_spans("minilm")
    assert spans is not None
    text = "Unbelievable cats! Tokenization"
    assert [text[start:end] for start, end in spans(text)] == [
        "Unbelievable",
        "cats",
        "!",
        "Token",
        "ization",
    ]
    long_text = "word " * 1000
    assert len(spans(long_text)) == 1000, "spans are never truncated"


async def test_before_start_a_model_is_unavailable_and_no_model_has_no_default(
    onnx_dir: Path,
) -> None:
    waiting = FastembedEmbedder(config(onnx_dir))
    with pytest.raises(ServiceUnavailable, match="'minilm' is not loaded yet"):
        await waiting.embed("minilm", ["x"], "query")
    assert waiting.statuses() == {"minilm": "loading"}
    with pytest.raises(ServiceUnavailable) as caught:
        FastembedEmbedder(FastembedConfig()).default_model()
    assert caught.value.message == (
        "the fastembed embedder has no model: add one under [fastembed.models]"
    )


async def test_a_named_default_model_and_table_settings(onnx_dir: Path) -> None:
    configured = FastembedConfig(
        models={
            "minilm": str(onnx_dir),
            "minilm-raw": ModelSpec(path=str(onnx_dir), pooling="cls", normalize=False),
        },
        default_model="minilm-raw",
        threads=1,
    )
    both = FastembedEmbedder(configured)
    await both.start()
    try:
        assert both.default_model() == "minilm-raw"
        normalised = await both.embed("minilm", ["the cat sat"], "query")
        raw = await both.embed("minilm-raw", ["the cat sat"], "query")
    finally:
        await both.close()
    assert abs(float(np.linalg.norm(normalised[0])) - 1.0) < 1e-5
    assert abs(float(np.linalg.norm(raw[0])) - 1.0) > 0.01, "CLS, not normalised"


@pytest.mark.parametrize(
    ("remove", "cause"),
    [
        (None, "the folder does not exist"),
        ("model.onnx", "model.onnx missing"),
        ("tokenizer_config.json", "tokenizer_config.json missing"),
    ],
)
async def test_a_missing_folder_or_file_fails_start_up_naming_model_and_path(
    onnx_dir: Path, tmp_path: Path, remove: str | None, cause: str
) -> None:
    folder = tmp_path / "model"
    if remove is not None:
        shutil.copytree(onnx_dir, folder)
        (folder / remove).unlink()
    broken = FastembedEmbedder(FastembedConfig(models={"broken": str(folder)}))
    with pytest.raises(ModelLoadError) as caught:
        await broken.start()
    assert str(caught.value).startswith(f"fastembed model 'broken' at {folder}: {cause}")
    assert "noa fastembed convert" in str(caught.value)
    # Served anyway (an optional plugin), the model answers 503 with the cause.
    with pytest.raises(ServiceUnavailable, match=f"'broken' failed to load: {cause}"):
        await broken.embed("broken", ["x"], "query")
    assert broken.statuses() == {"broken": "failed"}


async def test_one_broken_model_stops_the_others_being_served(
    onnx_dir: Path, tmp_path: Path
) -> None:
    mixed = FastembedEmbedder(
        FastembedConfig(models={"good": str(onnx_dir), "broken": str(tmp_path / "nowhere")})
    )
    with pytest.raises(ModelLoadError, match="'broken'"):
        await mixed.start()
    assert mixed.statuses() == {"good": "failed", "broken": "failed"}
    with pytest.raises(ServiceUnavailable, match="not served: model 'broken' failed to load"):
        await mixed.embed("good", ["x"], "query")


async def test_a_corrupt_onnx_file_fails_with_onnxruntimes_reason(
    onnx_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(onnx_dir, folder)
    (folder / "model.onnx").write_bytes(b"not a protobuf")
    broken = FastembedEmbedder(FastembedConfig(models={"broken": str(folder)}))
    with pytest.raises(ModelLoadError, match=rf"fastembed model 'broken' at {folder}: \w+"):
        await broken.start()


async def test_the_server_refuses_to_start_with_a_broken_model(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(PluginStartError) as caught:
        async with boot(
            ["http", "fastembed"], config={"fastembed": {"models": {"m": str(missing)}}}
        ):
            pass
    assert caught.value.plugin == "fastembed"
    assert f"fastembed model 'm' at {missing}: the folder does not exist" in str(caught.value)


async def test_an_unknown_default_model_refuses_to_start() -> None:
    with pytest.raises(PluginStartError, match=r"default_model 'x' is not one of its models"):
        async with boot(["http", "fastembed"], config={"fastembed": {"default_model": "x"}}):
            pass


async def test_loading_and_embedding_never_touch_the_network(
    onnx_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every socket refused and the hub's download functions replaced by traps, a
    model loads and embeds (no HF_HUB_OFFLINE needed: the folder is all fastembed gets)."""
    attempts: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(repr(args)[:80])
        raise OSError("network access in a test that must stay offline")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    from fastembed.common.model_management import ModelManagement

    for name in ("download_files_from_huggingface", "download_file_from_gcs"):
        monkeypatch.setattr(ModelManagement, name, classmethod(refuse))

    offline = FastembedEmbedder(config(onnx_dir))
    await offline.start()
    try:
        vectors = await offline.embed("minilm", ["offline and fine"], "query")
    finally:
        await offline.close()
    assert vectors.shape == (1, 384)
    assert attempts == []

    # The traps are live: a hub model (fastembed's usual path) trips them at once.
    from fastembed import TextEmbedding

    with pytest.raises(ValueError, match="Could not load model"):
        TextEmbedding("BAAI/bge-small-en-v1.5", cache_dir=str(tmp_path), local_files_only=True)
    assert attempts
