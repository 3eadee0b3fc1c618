"""A data folder whose SQLite database has the tables the auth plugin's neighbours need."""

from __future__ import annotations

from pathlib import Path

import pytest
from noa.builtin_plugins.storage.config import StorageConfig
from noa.builtin_plugins.storage.migrate import Migrator, make_engine

APPS = {
    "audit": "noa.builtin_plugins.audit.piccolo_app",
    "cache": "noa.builtin_plugins.cache.piccolo_app",
    "auth": "noa.builtin_plugins.auth.piccolo_app",
}


@pytest.fixture
async def data_dir(tmp_path: Path) -> str:
    folder = str(tmp_path / "data")
    await Migrator(make_engine("sqlite", StorageConfig(), folder), APPS).apply()
    return folder
