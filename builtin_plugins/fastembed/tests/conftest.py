"""Fixtures of the fastembed tests: the real all-MiniLM-L6-v2 (its safetensors folder and
the ONNX folder ``scripts/setup`` converts from it), and a migrated data folder.

``scripts/setup`` fetches the model into ``.noa/models`` and converts it into
``.noa/models-onnx``; ``NOA_TEST_MODEL_DIR`` and ``NOA_TEST_ONNX_MODEL_DIR`` point
elsewhere. Outside CI a missing folder skips the tests that need it, saying how to get it;
under CI (``CI=true``) it fails them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest
from noa.plugin_sdk.testing.requirements import missing

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
ROOT = Path(__file__).resolve().parents[3]


def _missing(message: str) -> NoReturn:
    missing(message, what="model")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The safetensors folder the project's own runtime loads."""
    configured = os.environ.get("NOA_TEST_MODEL_DIR")
    folder = Path(configured) if configured else ROOT / ".noa" / "models" / MODEL
    if not (folder / "model.safetensors").is_file():
        _missing(f"the model {MODEL} is not at {folder}; run ./scripts/setup")
    return folder


@pytest.fixture(scope="session")
def onnx_dir() -> Path:
    """The ONNX folder fastembed loads, as ``scripts/setup`` converts it."""
    configured = os.environ.get("NOA_TEST_ONNX_MODEL_DIR")
    folder = Path(configured) if configured else ROOT / ".noa" / "models-onnx" / "all-MiniLM-L6-v2"
    if not (folder / "model.onnx").is_file():
        _missing(
            f"the converted model is not at {folder}; run ./scripts/setup (or `noa fastembed "
            f"convert .noa/models/{MODEL} {folder}`), or set NOA_TEST_ONNX_MODEL_DIR"
        )
    return folder


@pytest.fixture
def data_dir(tmp_path: Path) -> str:
    """A data folder whose SQLite database holds every enabled plugin's tables, migrated
    as `noa serve` does it (the storage plugin's noa_before_serve)."""
    from noa.plugin_sdk.testing.harness import boot_kernel

    folder = str(tmp_path / "data")
    kernel = boot_kernel(
        ["http", "storage", "retrieval"],
        config={"server": {"data_dir": folder}, "storage": {"migrate_on_start": True}},
    )
    kernel.call_each("noa_before_serve", host=kernel)
    return folder
