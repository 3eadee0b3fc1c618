"""What a test does when something it needs is missing from the machine."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = ["missing"]


def missing(message: str, *, what: str = "resource") -> NoReturn:
    """Skip the test with ``message``, or fail it under ``CI=true``: outside CI a test may
    skip, visibly, when a service, model or tool is absent; in CI that is a failure,
    since the project's own setup provides everything its tests need."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: a missing {what} is a failure)", pytrace=False)
    pytest.skip(message)
