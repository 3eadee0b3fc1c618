"""Model loading and unloading: broken models are reported, memory comes back.

Broken models are real folders with real safetensors files, each wrong in one way.
"""

from __future__ import annotations

import gc
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from noa.builtin_plugins.inference.bert import _expected_shapes, read_config
from noa.builtin_plugins.inference.config import InferenceConfig
from noa.builtin_plugins.inference.cpu_device import CpuDevice
from noa.builtin_plugins.inference.errors import ModelLoadError, ModelNotFound, ModelNotReady
from noa.builtin_plugins.inference.repository import ModelRepository
from noa.builtin_plugins.inference.runtime import ModelRuntime
from safetensors.numpy import save_file

MODEL = "sentence-transformers/all-MiniLM-L6-v2"

TINY = {
    "model_type": "bert",
    "hidden_size": 8,
    "num_attention_heads": 2,
    "num_hidden_layers": 1,
    "intermediate_size": 16,
    "max_position_embeddings": 64,
    "vocab_size": 30522,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "hidden_act": "gelu",
}


def tiny_model(folder: Path, minilm_dir: Path, *, break_it: str = "") -> Path:
    """A small random BERT with MiniLM's tokenizer; ``break_it`` spoils one thing."""
    folder.mkdir(parents=True)
    shutil.copy(minilm_dir / "tokenizer.json", folder / "tokenizer.json")
    (folder / "config.json").write_text(json.dumps(TINY))
    rng = np.random.default_rng(0)
    tensors = {
        key: (rng.standard_normal(shape) * 0.1).astype(np.float32)
        for key, shape in _expected_shapes(read_config(folder)).items()
    }
    if break_it == "shape":
        tensors["encoder.layer.0.intermediate.dense.weight"] = np.zeros((8, 8), np.float32)
    elif break_it == "dtype":
        tensors["embeddings.LayerNorm.weight"] = np.zeros(8, np.int32)
    elif break_it == "missing-tensor":
        del tensors["encoder.layer.0.output.dense.bias"]
    if break_it != "missing-file":
        save_file(tensors, str(folder / "model.safetensors"))
    return folder


def runtime_for(root: Path, **config: Any) -> ModelRuntime:
    from noa.builtin_plugins.inference.bert import load_bert

    return ModelRuntime(
        ModelRepository(root), InferenceConfig(**config), {"bert": load_bert}, CpuDevice
    )


@pytest.mark.parametrize(
    ("break_it", "cause"),
    [
        ("missing-file", "model.safetensors is missing"),
        (
            "shape",
            "tensor 'encoder.layer.0.intermediate.dense.weight' has shape [8, 8]; "
            "config.json implies [16, 8]",
        ),
        (
            "dtype",
            "tensor 'embeddings.LayerNorm.weight' has dtype int32; float32 or float16 needed",
        ),
        ("missing-tensor", "tensor 'encoder.layer.0.output.dense.bias' is missing"),
    ],
)
async def test_a_broken_model_is_reported_by_name_and_cause(
    tmp_path: Path, minilm_dir: Path, break_it: str, cause: str
) -> None:
    root = tmp_path / "models"
    tiny_model(root / "good", minilm_dir)
    tiny_model(root / "broken", minilm_dir, break_it=break_it)
    runtime = runtime_for(root)
    await runtime.start()
    statuses = {s.name: s for s in runtime.statuses()}
    assert statuses["good"].state == "ready"
    assert statuses["broken"].state == "failed"
    assert cause in (statuses["broken"].error or "")
    with pytest.raises(ModelNotReady, match="broken"):
        runtime.get("broken")
    result = await runtime.get("good").embed(["still serving"])
    assert result.vectors.shape == (1, 8)
    with pytest.raises(ModelLoadError, match=f"model 'broken' cannot be loaded: .*{cause[:20]}"):
        await runtime.load("broken")
    await runtime.close()


async def test_an_unknown_family_and_a_bad_config_are_named(
    tmp_path: Path, minilm_dir: Path
) -> None:
    root = tmp_path / "models"
    tiny_model(root / "other", minilm_dir)
    (root / "other" / "config.json").write_text(json.dumps({**TINY, "model_type": "gpt2"}))
    tiny_model(root / "odd", minilm_dir)
    (root / "odd" / "config.json").write_text(json.dumps({**TINY, "num_attention_heads": 3}))
    runtime = runtime_for(root)
    await runtime.start()
    errors = {s.name: s.error for s in runtime.statuses()}
    assert "no model family 'gpt2' is installed (families: bert)" in (errors["other"] or "")
    assert "hidden_size 8 is not a multiple of num_attention_heads 3" in (errors["odd"] or "")
    with pytest.raises(ModelNotFound):
        await runtime.load("absent")
    await runtime.close()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@pytest.mark.slow
async def test_fifty_load_unload_cycles_give_the_memory_back(model_repository: Path) -> None:
    runtime = runtime_for(model_repository, load=())
    await runtime.load(MODEL)
    await runtime.get(MODEL).embed(["warm up every code path once"] * 40)
    await runtime.unload(MODEL)
    gc.collect()
    baseline = _rss_bytes()
    for cycle in range(50):
        await runtime.load(MODEL)
        # Use it, so activations and scratch buffers are allocated too.
        await runtime.get(MODEL).embed([f"cycle {cycle} " * 30] * 8)
        await runtime.unload(MODEL)
    gc.collect()
    grown = _rss_bytes() / baseline
    assert grown <= 1.10, f"RSS went from {baseline >> 20} MiB to x{grown:.2f}"


async def test_models_load_and_unload_through_the_admin_api(inference: Any) -> None:
    client = inference.client
    listed = (await client.get("/v1/admin/models")).json()["data"]
    assert [(m["name"], m["state"], m["dimension"]) for m in listed] == [(MODEL, "ready", 384)]
    unloaded = await client.post("/v1/admin/models/unload", json={"model": MODEL})
    assert unloaded.json()["state"] == "unloaded"
    refused = await client.post("/v1/embed", json={"input": "hi", "model": MODEL})
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "model_not_ready"
    loaded = await client.post("/v1/admin/models/load", json={"model": MODEL})
    assert loaded.status_code == 200 and loaded.json()["state"] == "ready"
    assert (await client.post("/v1/embed", json={"input": "hi"})).status_code == 200
    missing = await client.post("/v1/admin/models/load", json={"model": "no/such-model"})
    assert missing.status_code == 404
    assert "no/such-model" in missing.json()["error"]["message"]
    bad = await client.post("/v1/admin/models/load", json={"model": "../etc"})
    assert bad.status_code == 404


async def test_readiness_names_a_failed_model(tmp_path: Path, minilm_dir: Path, ready: Any) -> None:
    from noa.plugin_sdk.testing import boot

    root = tmp_path / "models"
    tiny_model(root / "broken", minilm_dir, break_it="shape")
    tiny_model(root / "good", minilm_dir)
    async with boot(["http", "inference"], config={"inference": {"repository": str(root)}}) as k:
        await ready(k.client)
        report = (await k.client.get("/ready")).json()
        models = next(c for c in report["components"] if c["name"] == "models")
        assert models["status"] == "degraded"
        assert (
            "broken (tensor 'encoder.layer.0.intermediate.dense.weight' has shape"
            in (models["detail"])
        )
        failed = await k.client.post("/v1/admin/models/load", json={"model": "broken"})
        assert failed.status_code == 422
        assert failed.json()["error"]["code"] == "model_load_failed"
