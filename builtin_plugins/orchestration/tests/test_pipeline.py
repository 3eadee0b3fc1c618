"""The issue's end to end: one call to ``/v1/workflow`` runs the query through the model
(``infer``, named tensors), embeds it (``embed``), ingests documents and searches with
the query's vector, on the embedded profile with the real default model, through the
task types the inference and retrieval plugins own."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from noa.builtin_plugins.storage.config import StorageConfig
from noa.builtin_plugins.storage.migrate import Migrator, make_engine
from noa.plugin_sdk.testing.harness import boot
from noa.plugin_sdk.testing.requirements import missing

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
QUERY = "Which city is France's capital?"
ROOT = Path(__file__).resolve().parents[3]
PLUGINS = ["http", "observability", "storage", "broker", "inference", "retrieval", "orchestration"]


@pytest.fixture
def model_repository(tmp_path: Path) -> Path:
    """A model repository holding the default model (fetched by ``scripts/setup``, or
    where ``NOA_TEST_MODEL_DIR`` points); skipped outside CI when it is absent."""
    configured = os.environ.get("NOA_TEST_MODEL_DIR")
    folder = Path(configured) if configured else ROOT / ".noa" / "models" / MODEL
    if not (folder / "model.safetensors").is_file():
        missing(f"the model {MODEL} is not at {folder}; run ./scripts/setup", what="model")
    repository = tmp_path / "models"
    (repository / "sentence-transformers").mkdir(parents=True)
    (repository / MODEL).symlink_to(folder, target_is_directory=True)
    return repository


@pytest.fixture
async def pipeline_data(tmp_path: Path) -> str:
    folder = str(tmp_path / "pipeline")
    apps = {
        "retrieval": "noa.builtin_plugins.retrieval.piccolo_app",
        "orchestration": "noa.builtin_plugins.orchestration.piccolo_app",
    }
    await Migrator(make_engine("sqlite", StorageConfig(), folder), apps).apply()
    return folder


async def test_embed_ingest_search_in_one_call(pipeline_data: str, model_repository: Path) -> None:
    config = {
        "server": {"data_dir": pipeline_data},
        "inference": {"repository": str(model_repository)},
        "orchestration": {"poll_interval_s": 0.05, "lease_s": 1.0},
    }
    async with boot(PLUGINS, config=config) as noa:
        for _ in range(600):
            if (await noa.client.get("/ready")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        created = await noa.client.post("/v1/collections", json={"name": "notes"})
        assert created.status_code == 201, created.text
        documents = [
            {"id": "cats", "text": "Cats are small domesticated felines that purr."},
            {"id": "rust", "text": "Rust is a systems programming language focused on safety."},
            {"id": "paris", "text": "Paris is the capital city of France."},
        ]
        workflow = {
            "steps": [
                {
                    "id": "tensors",
                    "type": "infer",
                    "input": {
                        "inputs": [
                            {"name": "text", "datatype": "BYTES", "shape": [1], "data": [QUERY]}
                        ]
                    },
                },
                {"id": "query", "type": "embed", "input": {"input": [QUERY]}},
                {
                    "id": "store",
                    "type": "ingest",
                    "input": {"collection": "notes", "documents": documents},
                },
                {
                    "id": "find",
                    "type": "search",
                    "depends_on": ["tensors", "query", "store"],
                    "input": {
                        "collection": "notes",
                        "vector": {"$ref": "tensors.output.outputs.0.data"},
                        "top_k": 2,
                    },
                },
            ],
            "max_parallel": 2,
        }
        response = await noa.client.post("/v1/workflow", json=workflow, params={"timeout_s": 120})
        assert response.status_code == 200, response.text
        done = response.json()
        assert done["state"] == "succeeded", done
        steps = {s["id"]: s for s in done["steps"]}
        assert steps["query"]["output"]["model"] == MODEL
        assert len(steps["query"]["output"]["embeddings"][0]) == 384
        tensor = steps["tensors"]["output"]["outputs"][0]
        assert (tensor["name"], tensor["shape"]) == ("embedding", [1, 384])
        embedded = steps["query"]["output"]["embeddings"][0]
        assert max(abs(a - b) for a, b in zip(tensor["data"], embedded, strict=True)) < 1e-5
        # The task is /v1/infer's own work.
        direct = await noa.client.post("/v1/infer", json=workflow["steps"][0]["input"])
        assert direct.status_code == 200, direct.text
        assert direct.json()["outputs"][0]["shape"] == [1, 384]
        assert steps["store"]["output"]["ingested"] == 3
        hits = steps["find"]["output"]["hits"]
        assert hits[0]["document_id"] == "paris"
        assert "capital city of France" in hits[0]["text"]

        # A client mistake in a step fails it at once, without retries.
        bad = {
            "steps": [{"id": "s", "type": "search", "input": {"collection": "none", "text": "x"}}]
        }
        failed = (await noa.client.post("/v1/workflow", json=bad)).json()
        assert failed["state"] == "failed"
        assert (failed["steps"][0]["attempts"], failed["steps"][0]["state"]) == (1, "failed")
