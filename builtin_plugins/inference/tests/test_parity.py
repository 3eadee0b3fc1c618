"""Our encoder against sentence-transformers on the same model (the golden file).

``golden/minilm_golden.npz`` holds sentence-transformers' own embeddings of
``golden/sentences.json`` (short, long, truncated and non-ASCII texts); the committed
``golden/regenerate.py`` rebuilds it from sentence-transformers on PyTorch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from noa.builtin_plugins.inference.bert import BertEmbedder
from noa.builtin_plugins.inference.cpu_device import CpuDevice

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def golden() -> tuple[list[str], Any]:
    sentences = json.loads((GOLDEN / "sentences.json").read_text(encoding="utf-8"))
    data = np.load(GOLDEN / "minilm_golden.npz")
    return sentences, data


@pytest.fixture(scope="module")
def embedder(minilm_dir: Path) -> BertEmbedder:
    model = BertEmbedder.load(minilm_dir, CpuDevice(), threads=2)
    yield model
    model.release()


def test_the_golden_set_is_varied(golden: tuple[list[str], Any]) -> None:
    sentences, data = golden
    assert len(sentences) >= 100
    assert (data["untruncated_token_counts"] > 256).sum() >= 5  # truncated ones
    assert any(not s.isascii() for s in sentences)
    assert data["token_counts"].min() <= 5


def test_embeddings_match_sentence_transformers(
    embedder: BertEmbedder, golden: tuple[list[str], Any]
) -> None:
    sentences, data = golden
    ours = embedder.embed(sentences)
    expected = data["embeddings"]
    cosine = np.sum(ours * expected, axis=1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(expected, axis=1)
    )
    worst = int(np.argmin(cosine))
    assert cosine.min() >= 0.9999, f"sentence {worst} {sentences[worst][:60]!r}: {cosine[worst]}"


def test_token_counts_match_sentence_transformers(
    embedder: BertEmbedder, golden: tuple[list[str], Any]
) -> None:
    sentences, data = golden
    tokens = embedder.tokenize(sentences, truncate=True)
    assert [len(t.ids) for t in tokens] == data["token_counts"].tolist()
    assert [t.truncated for t in tokens] == (data["untruncated_token_counts"] > 256).tolist()


def test_batching_does_not_change_a_vector(embedder: BertEmbedder) -> None:
    texts = ["a short one", "a somewhat longer sentence about the weather in spring " * 3, "x"]
    alone = np.stack([embedder.embed([t])[0] for t in texts])
    together = embedder.embed(texts)
    np.testing.assert_allclose(together, alone, atol=1e-5)
