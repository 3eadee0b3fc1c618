"""Fixtures of the inference tests: the real all-MiniLM-L6-v2 model, and kernels serving it.

The model is fetched by ``scripts/setup`` (``noa models add``) into ``.noa/models``;
``NOA_TEST_MODEL_DIR`` points elsewhere. Outside CI a missing model skips the tests that
need it, saying how to get it; under CI (``CI=true``) it fails them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from noa.plugin_sdk.testing import boot
from noa.plugin_sdk.testing.requirements import missing

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
ROOT = Path(__file__).resolve().parents[3]


def _model_dir() -> Path:
    configured = os.environ.get("NOA_TEST_MODEL_DIR")
    return Path(configured) if configured else ROOT / ".noa" / "models" / MODEL


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder (safetensors, tokenizer.json, config.json ...)."""
    folder = _model_dir()
    if not (folder / "model.safetensors").is_file():
        message = (
            f"the model {MODEL} is not at {folder}; run ./scripts/setup "
            f"(or `noa models add {MODEL}`), or set NOA_TEST_MODEL_DIR"
        )
        missing(message, what="model")
    return folder


@pytest.fixture
def model_repository(tmp_path: Path, minilm_dir: Path) -> Path:
    """A repository holding the model under its full name (a symlink, not a copy)."""
    root = tmp_path / "models"
    (root / "sentence-transformers").mkdir(parents=True)
    (root / MODEL).symlink_to(minilm_dir, target_is_directory=True)
    return root


@pytest.fixture
async def inference(model_repository: Path) -> AsyncIterator[Any]:
    """A started kernel (http, observability, inference) with the model loaded."""
    async with boot(
        ["http", "observability", "inference"],
        config={"inference": {"repository": str(model_repository)}},
    ) as kernel:
        await wait_ready(kernel.client)
        yield kernel


@pytest.fixture
def ready() -> Any:
    """``await ready(client)``: wait until the kernel's ``/ready`` answers 200."""
    return wait_ready


async def wait_ready(client: Any, timeout_s: float = 60.0) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = await client.get("/ready")
        if response.status_code == 200:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not ready after {timeout_s} s: {response.text}")
