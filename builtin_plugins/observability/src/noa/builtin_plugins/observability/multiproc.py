"""Preparing Prometheus' multiprocess directory in the ``noa serve`` parent.

Kept apart from :mod:`.metrics` on purpose: prometheus_client picks its value storage
when first imported, so it must not be imported before ``PROMETHEUS_MULTIPROC_DIR`` is
exported to the workers.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["MULTIPROC_ENV", "prepare_multiprocess_dir"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(path: Path) -> None:
    """Empty (or create) the directory and export it to the workers about to start."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(path.resolve())
