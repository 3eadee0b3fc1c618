"""``noa serve`` as a real process: readiness, draining on SIGTERM, several workers,
start-up failures and TLS."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

SLOW_PLUGIN = """
import asyncio
from litestar import get
from litestar.params import FromQuery
from noa.plugin_sdk import RouteGroup, hookimpl

@get("/v1/slow", sync_to_thread=False)
async def slow(ms: FromQuery[int]) -> dict:
    await asyncio.sleep(ms / 1000)
    return {"slept_ms": ms}

@hookimpl
def noa_register_routes(routes):
    routes.add("slow", RouteGroup(handlers=(slow,)))

@hookimpl
def noa_before_serve(host):
    import os
    with open("before-serve.log", "a") as log:
        log.write(f"{os.getpid()}\\n")
"""

BOOM_PLUGIN = """
from noa.plugin_sdk import hookimpl

@hookimpl
def noa_startup(host):
    raise ConnectionError("database at 10.0.0.1 unreachable")
"""


@pytest.fixture
def slow_site(dist_factory: Any) -> Path:
    return dist_factory(
        "noa-plugin-slow", {"noa.plugins": {"slow": "slow_plugin"}}, {"slow_plugin": SLOW_PLUGIN}
    )


def test_sigterm_drains_in_flight_requests_then_exits_zero(serve: Any, slow_site: Path) -> None:
    server = serve(pythonpath=[slow_site])
    server.wait_ready()
    results: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: results.append(httpx.get(server.url + "/v1/slow?ms=1500", timeout=10))
    )
    thread.start()
    time.sleep(0.5)  # the request is in flight
    sent = time.monotonic()
    assert server.terminate() == 0
    thread.join(10)
    assert [r.status_code for r in results] == [200]
    assert results[0].json() == {"slept_ms": 1500}
    assert time.monotonic() - sent < 10


def test_before_serve_runs_once_in_the_parent(serve: Any, slow_site: Path, tmp_path: Path) -> None:
    server = serve("--workers", "2", pythonpath=[slow_site])
    server.wait_ready()
    assert (tmp_path / "before-serve.log").read_text().split() == [str(server.proc.pid)]
    assert server.terminate() == 0


def test_metrics_totals_are_exact_across_two_workers(serve: Any) -> None:
    server = serve("--workers", "2")
    server.wait_ready()
    for _ in range(40):
        # A new connection each time, so both workers take a share.
        assert httpx.get(server.url + "/health", headers={"Connection": "close"}).status_code == 200
    # Each worker moves its tallies into the shared metrics within 0.5 s: poll a while.
    total = 0.0
    deadline = time.monotonic() + 10
    while total < 40 and time.monotonic() < deadline:
        time.sleep(0.1)
        text = httpx.get(server.url + "/metrics").text
        total = sum(
            float(ln.rsplit(" ", 1)[1])
            for ln in text.splitlines()
            if ln.startswith("http_requests_total{")
            and 'route="/health"' in ln
            and 'status="200"' in ln
        )
    assert total == 40.0
    assert server.terminate() == 0


def test_plugin_failing_to_start_stops_the_server_with_its_name(
    serve: Any, dist_factory: Any
) -> None:
    site = dist_factory(
        "noa-plugin-boom", {"noa.plugins": {"boom": "boom_plugin"}}, {"boom_plugin": BOOM_PLUGIN}
    )
    server = serve(pythonpath=[site])
    assert server.proc.wait(30) == 1
    assert (
        "noa: error: plugin 'boom': startup failed: ConnectionError: database at 10.0.0.1 unreachable"
        in server.output()
    )


def test_optional_plugin_failing_to_start_does_not_stop_the_server(
    serve: Any, dist_factory: Any
) -> None:
    site = dist_factory(
        "noa-plugin-boom", {"noa.plugins": {"boom": "boom_plugin"}}, {"boom_plugin": BOOM_PLUGIN}
    )
    server = serve(env={"NOA_PLUGINS__OPTIONAL": '["boom"]'}, pythonpath=[site])
    server.wait_ready()
    rows = {r["name"]: r for r in httpx.get(server.url + "/v1/plugins").json()["data"]}
    assert rows["boom"]["state"] == "failed"
    assert "database at 10.0.0.1 unreachable" in rows["boom"]["error"]
    assert server.terminate() == 0


def test_invalid_config_exits_2_with_one_line(noa_cli: Any) -> None:
    result = noa_cli("serve", env={"NOA_SERVER__WORKERS": "zero"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "noa: error: config key 'server.workers' = 'zero' (from environment NOA_SERVER__WORKERS): Expected `int`, got `str`"
    ]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl command not installed")
def test_serves_https_with_the_configured_certificate(serve: Any, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    server = serve("--ssl-certificate", str(cert), "--ssl-keyfile", str(key))
    url = f"https://127.0.0.1:{server.port}/health"
    trust = ssl.create_default_context(cafile=str(cert))
    deadline = time.monotonic() + 30
    while True:
        try:
            response = httpx.get(url, verify=trust)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or server.proc.poll() is not None:
                pytest.fail(server.output())
            time.sleep(0.1)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert server.terminate() == 0


def test_port_already_in_use_is_refused_with_one_line(serve: Any, noa_cli: Any) -> None:
    first = serve()
    first.wait_ready()
    second = noa_cli("serve", "--port", str(first.port), timeout=30)
    assert second.returncode == 1
    assert second.stderr.strip().splitlines()[-1] == (
        f"noa: error: cannot listen on 127.0.0.1:{first.port}: the port is already in use "
        "(is another server running?)"
    )
    assert first.terminate() == 0


def test_plugin_failing_to_import_stops_serve_with_one_line(
    noa_cli: Any, dist_factory: Any
) -> None:
    site = dist_factory(
        "noa-plugin-typo",
        {"noa.plugins": {"typo": "typo_plugin"}},
        {"typo_plugin": "from noa.plugin_sdk import hookimpl\nimport not_installed_dependency\n"},
    )
    result = noa_cli("serve", pythonpath=[site])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "noa: error: plugin 'typo': cannot import typo_plugin: ModuleNotFoundError: "
        "No module named 'not_installed_dependency'"
    ]
