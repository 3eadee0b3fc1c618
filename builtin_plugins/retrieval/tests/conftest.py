"""Fixtures the retrieval tests share: the real default model and a migrated data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from noa.builtin_plugins.storage.config import StorageConfig
from noa.builtin_plugins.storage.migrate import Migrator, make_engine
from noa.plugin_sdk.testing.requirements import missing

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder, found as the inference tests find it: fetched by
    ``scripts/setup`` into ``.noa/models``, or where ``NOA_TEST_MODEL_DIR`` points. Missing,
    it skips outside CI and fails under it (``CI=true``)."""
    configured = os.environ.get("NOA_TEST_MODEL_DIR")
    folder = Path(configured) if configured else ROOT / ".noa" / "models" / MODEL
    if not (folder / "model.safetensors").is_file():
        message = (
            f"the model {MODEL} is not at {folder}; run ./scripts/setup "
            f"(or `noa models add {MODEL}`), or set NOA_TEST_MODEL_DIR"
        )
        missing(message, what="model")
    return folder


@pytest.fixture(scope="session")
def model_repository(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository holding only the default model (a link to it)."""
    repository = tmp_path_factory.mktemp("models")
    (repository / "sentence-transformers").mkdir()
    (repository / MODEL).symlink_to(minilm_dir, target_is_directory=True)
    return repository


@pytest.fixture
async def data_dir(tmp_path: Path) -> str:
    """A data folder whose SQLite database holds the retrieval catalog's tables."""
    folder = str(tmp_path / "data")
    apps = {"retrieval": "noa.builtin_plugins.retrieval.piccolo_app"}
    await Migrator(make_engine("sqlite", StorageConfig(), folder), apps).apply()
    return folder
