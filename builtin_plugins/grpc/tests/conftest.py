"""Fixtures of the gRPC tests: the real all-MiniLM-L6-v2 model (from ``scripts/setup``)
and a grpc.aio channel to a kernel's gRPC server."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from noa.plugin_sdk.testing.requirements import missing

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def model_repository(tmp_path: Path) -> Path:
    """A repository holding the model under its full name (a symlink, not a copy)."""
    configured = os.environ.get("NOA_TEST_MODEL_DIR")
    folder = Path(configured) if configured else ROOT / ".noa" / "models" / MODEL
    if not (folder / "model.safetensors").is_file():
        missing(f"the model {MODEL} is not at {folder}; run ./scripts/setup", what="model")
    root = tmp_path / "models"
    (root / "sentence-transformers").mkdir(parents=True)
    (root / MODEL).symlink_to(folder, target_is_directory=True)
    return root


def grpc_port(kernel: Any) -> int:
    port: int = kernel.kernel.state["noa.grpc.server"].port
    return port


@pytest.fixture
async def channel_to() -> AsyncIterator[Any]:
    """``channel_to(port)``: an insecure grpc.aio channel, closed after the test."""
    opened: list[grpc.aio.Channel] = []

    def open_channel(port: int) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        opened.append(channel)
        return channel

    yield open_channel
    for channel in opened:
        await channel.close()
