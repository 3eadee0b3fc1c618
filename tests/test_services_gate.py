"""The service gate: a test that needs PostgreSQL, Redis or NATS skips with its reason
when the service is absent, except under CI, where it fails."""

from __future__ import annotations

import socket

import pytest

pytest_plugins = ["pytester"]

TEST = """
import pytest

@pytest.mark.redis
def test_needs_redis():
    pass
"""


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    from pathlib import Path

    root_conftest = Path(__file__).resolve().parents[1] / "conftest.py"
    pytester.makeconftest(root_conftest.read_text())
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\nmarkers =\n    redis: needs redis\n"
    )
    pytester.makepyfile(test_gate=TEST)
    monkeypatch.setenv("NOA_TEST_REDIS_ADDR", f"127.0.0.1:{closed_port()}")
    return pytester


def test_missing_service_skips_with_the_reason_outside_ci(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    result = project.runpytest("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*redis service needed: 127.0.0.1:* unreachable*"])


def test_missing_service_fails_under_ci(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*CI=true: a missing service is a failure*"])


@pytest.mark.redis
def test_redis_is_reachable_here() -> None:
    """The gate lets a marked test run when the service answers (Redis on this machine)."""
    with socket.create_connection(("127.0.0.1", 6379), timeout=2) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(16).startswith(b"+PONG")
