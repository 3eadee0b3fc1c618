"""The converter: its graph, its folder, and embeddings that match the project's own
runtime (the inference plugin's BertEmbedder on the cpu device) on varied texts."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from noa.builtin_plugins.fastembed.bert_graph import OPSET
from noa.builtin_plugins.fastembed.config import ModelSpec
from noa.builtin_plugins.fastembed.convert import MARKER, ConversionError, convert, is_fresh
from noa.builtin_plugins.fastembed.embedder import load_model

# Short and long, punctuation, digits, casing, accents, other scripts, emoji, code,
# whitespace, an empty text, and one far past the model's 256 tokens (truncated alike).
TEXTS = [
    "Cats purr when they are content.",
    "A dog barks at the mail carrier every morning.",
    "hi",
    "",
    "   leading and trailing spaces   ",
    "UPPER CASE SHOUTING ABOUT THE WEATHER",
    "The quarterly revenue grew by 12.5% to $4.2 billion in Q3 2025.",
    "Quantum entanglement links the states of two particles across distance.",
    "How do I reset my password if I no longer have access to my email?",
    "Café crème brûlée naïve résumé façade",
    "Die Katze schläft auf dem warmen Fensterbrett.",
    "El perro corre por el parque con una pelota roja.",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "🙂 emoji 🚀 and symbols ©®™ ∑∫√",
    "def embed(texts): return [model(t) for t in texts]",
    "SELECT name FROM users WHERE age > 30 ORDER BY name;",
    "https://example.com/path?query=1&other=two#fragment",
    "line one\nline two\ttabbed\r\nline three",
    "a a a a a a a a a a a a a a a a a a a a",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The mitochondria is the powerhouse of the cell.",
    "She sells sea shells by the sea shore.",
    "To be, or not to be, that is the question.",
    "Error 404: the requested resource could not be found on this server.",
    "Mix two cups of flour with one cup of sugar and three eggs.",
    "The Treaty of Westphalia was signed in 1648.",
    "Neural networks learn representations from data through gradient descent.",
    "rain",
    "Is it going to rain tomorrow in Seattle?",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "I love this product, it works perfectly and arrived early!",
    "Terrible service, the package was damaged and nobody answered my emails.",
    "The ancient library held thousands of scrolls on astronomy and medicine. " * 40,
    " ".join(f"token{i}" for i in range(300)),
    "x" * 2000,
]


@pytest.fixture(scope="module")
def converted(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh conversion made by this test run (not the setup's)."""
    out = tmp_path_factory.mktemp("onnx") / "minilm"
    convert(minilm_dir, out)
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


def test_fastembed_on_the_converted_model_matches_the_projects_runtime(
    minilm_dir: Path, onnx_dir: Path
) -> None:
    from noa.builtin_plugins.inference.bert import BertEmbedder
    from noa.builtin_plugins.inference.cpu_device import CpuDevice

    runtime = BertEmbedder.load(minilm_dir, CpuDevice(), threads=2)
    try:
        expected = runtime.embed(TEXTS)
    finally:
        runtime.release()
    model = load_model("minilm", ModelSpec(path=str(onnx_dir)), threads=2)
    got = model.embed(TEXTS, batch_size=8)

    assert got.shape == expected.shape == (len(TEXTS), 384)
    assert got.dtype == np.float32
    similarity = cosine(got, expected)
    assert similarity.min() > 0.9999, {
        TEXTS[i][:40]: float(similarity[i]) for i in range(len(TEXTS))
    }
    assert np.abs(got - expected).max() < 1e-4
    # Both normalise: unit vectors.
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_the_graph_has_dynamic_int64_inputs_and_a_float_hidden_state(converted: Path) -> None:
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(converted / "model.onnx"))
    assert [(o.domain, o.version) for o in model.opset_import] == [("", OPSET)]

    def dims(value: onnx.ValueInfoProto) -> list[str | int]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    inputs = {i.name: i for i in model.graph.input}
    assert sorted(inputs) == ["attention_mask", "input_ids", "token_type_ids"]
    for value in inputs.values():
        assert value.type.tensor_type.elem_type == TensorProto.INT64
        assert dims(value) == ["batch", "sequence"]
    [output] = model.graph.output
    assert output.name == "last_hidden_state"
    assert output.type.tensor_type.elem_type == TensorProto.FLOAT
    assert dims(output) == ["batch", "sequence", 384]


def test_the_folder_holds_what_fastembed_reads_with_the_sentence_models_length(
    converted: Path, minilm_dir: Path
) -> None:
    names = {p.name for p in converted.iterdir()}
    assert {"model.onnx", "tokenizer.json", "tokenizer_config.json", "config.json"} <= names
    assert (converted / "tokenizer.json").read_bytes() == (
        minilm_dir / "tokenizer.json"
    ).read_bytes()
    # sentence_bert_config.json says 256; tokenizer_config.json said 512.
    assert json.loads((converted / "tokenizer_config.json").read_text())["model_max_length"] == 256
    marker = json.loads((converted / MARKER).read_text())
    assert (marker["pooling"], marker["normalize"], marker["max_length"]) == ("mean", True, 256)


def test_padding_does_not_change_a_texts_vector(converted: Path) -> None:
    model = load_model("minilm", ModelSpec(path=str(converted)), threads=1)
    short, long = "a short text", "a much longer text that makes the batch pad the short one " * 5
    alone = model.embed([short], batch_size=1)
    together = model.embed([short, long], batch_size=2)
    assert cosine(alone, together[:1])[0] > 0.99999


def test_is_fresh_until_a_source_file_changes(minilm_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(minilm_dir, source)
    out = tmp_path / "out"
    assert not is_fresh(source, out)
    convert(source, out)
    assert is_fresh(source, out)
    assert not is_fresh(minilm_dir, out), "converted from another folder"

    # A conversion older than its source (the model was fetched again since).
    hour_ago = time.time() - 3600
    os.utime(out / "model.onnx", (hour_ago, hour_ago))
    assert not is_fresh(source, out)
    convert(source, out)  # replaces its own earlier output
    assert is_fresh(source, out)

    # Fetched again with older timestamps: different files, converted again.
    earlier = time.time() - 7200
    os.utime(source / "tokenizer.json", (earlier, earlier))
    assert not is_fresh(source, out)
    convert(source, out)
    assert is_fresh(source, out)

    # Made by an older converter: redone.
    marker = json.loads((out / MARKER).read_text())
    (out / MARKER).write_text(json.dumps({**marker, "graph_version": 0}))
    assert not is_fresh(source, out)


def test_the_command_skips_a_fresh_folder(minilm_dir: Path, tmp_path: Path, noa_cli: Any) -> None:
    run = noa_cli
    out = tmp_path / "out"
    first = run("fastembed", "convert", str(minilm_dir), str(out), "--if-stale")
    assert first.returncode == 0, first.stderr
    assert "converted (6 layers, 384 wide)" in first.stdout
    assert f'path = "{out.resolve()}"' in first.stdout
    built = (out / "model.onnx").stat().st_mtime_ns
    second = run("fastembed", "convert", str(minilm_dir), str(out), "--if-stale")
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == f"{out}: up to date"
    assert (out / "model.onnx").stat().st_mtime_ns == built


def test_a_folder_it_did_not_write_is_never_replaced(minilm_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ConversionError, match="was not written by `noa fastembed convert`"):
        convert(minilm_dir, out)
    assert (out / "notes.txt").read_text() == "keep me"


def test_a_broken_source_is_refused_naming_the_file(minilm_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    with pytest.raises(ConversionError, match=r"config\.json is missing"):
        convert(source, tmp_path / "out")

    shutil.copyfile(minilm_dir / "config.json", source / "config.json")
    shutil.copyfile(minilm_dir / "tokenizer.json", source / "tokenizer.json")
    from safetensors.numpy import save_file

    save_file(
        {"embeddings.word_embeddings.weight": np.zeros((4, 4), np.float32)},
        str(source / "model.safetensors"),
    )
    with pytest.raises(
        ConversionError, match=r"tensor 'embeddings\.word_embeddings\.weight' has shape"
    ):
        convert(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["source"], "no staging folder left"
