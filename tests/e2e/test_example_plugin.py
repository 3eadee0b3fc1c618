"""The plugin model, proven with a real third-party distribution: ``noa-plugin-hello`` is
installed with pip into a folder on ``PYTHONPATH`` and the unchanged kernel picks it up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def pip_install(package: Path, target: Path) -> Path:
    """``pip install`` a package into ``target``, a folder the tests put on PYTHONPATH."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(package),
        ],
        check=True,
        timeout=300,
    )
    return target


@pytest.fixture(scope="module")
def hello_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pip_install(
        REPO / "examples" / "noa-plugin-hello", tmp_path_factory.mktemp("hello-site")
    )


def test_installed_plugin_is_listed_with_its_hooks(noa_cli: Any, hello_site: Path) -> None:
    result = noa_cli("plugins", "list", "--json", pythonpath=[hello_site])
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    hello = rows["hello"]
    assert (hello["version"], hello["distribution"], hello["enabled"]) == (
        "1.0.0",
        "noa-plugin-hello",
        True,
    )
    assert hello["entry_point"] == "noa_plugin_hello.plugin"
    assert {
        "noa_register_routes",
        "noa_register_health_checks",
        "noa_register_driver_slots",
    } <= set(hello["hooks"])

    table = noa_cli("plugins", "list", pythonpath=[hello_site]).stdout
    assert any(
        line.startswith("hello ") and "noa-plugin-hello" in line for line in table.splitlines()
    )


def test_installed_plugin_adds_routes_and_a_readiness_check(serve: Any, hello_site: Path) -> None:
    server = serve(pythonpath=[hello_site])
    server.wait_ready()
    assert httpx.get(server.url + "/v1/hello/world").json()["message"] == "Hello, world!"
    greeted = httpx.post(
        server.url + "/v1/hello/greet", json={"name": "Ada", "repeat": 2, "tags": ["x"]}
    )
    assert greeted.status_code == 201
    assert greeted.json() == {"message": "Hello, Ada! Hello, Ada!", "language": "en", "tags": ["x"]}
    refused = httpx.post(server.url + "/v1/hello/greet", json={"name": "Ada", "repeat": 11})
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "repeat"
    components = httpx.get(server.url + "/ready").json()["components"]
    assert ("hello", "hello", "ok") in [(c["name"], c["plugin"], c["status"]) for c in components]
    assert server.terminate() == 0


def test_installed_plugin_check_and_driver_follow_config(serve: Any, hello_site: Path) -> None:
    server = serve(
        env={"NOA_HELLO__READY": "false", "NOA_DRIVERS__GREETER": "shouting"},
        pythonpath=[hello_site],
    )
    response = server.wait_listening()
    assert response.status_code == 503
    hello = next(c for c in response.json()["components"] if c["name"] == "hello")
    assert hello["detail"] == "[hello] ready is false"
    assert httpx.get(server.url + "/v1/hello/world").json()["message"] == "HELLO, WORLD!"
    assert server.terminate() == 0


def test_installed_plugin_can_be_disabled_by_config(
    serve: Any, noa_cli: Any, hello_site: Path
) -> None:
    result = noa_cli(
        "--set", 'plugins.disable=["hello"]', "plugins", "list", "--json", pythonpath=[hello_site]
    )
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert (rows["hello"]["enabled"], rows["hello"]["state"]) == (False, "disabled")

    server = serve(env={"NOA_PLUGINS__DISABLE": '["hello"]'}, pythonpath=[hello_site])
    server.wait_ready()
    assert httpx.get(server.url + "/v1/hello/world").status_code == 404
    components = httpx.get(server.url + "/ready").json()["components"]
    assert "hello" not in [c["name"] for c in components]
    assert server.terminate() == 0


def test_installed_plugin_contributes_a_cli_command(noa_cli: Any, hello_site: Path) -> None:
    assert noa_cli("hello", "Lin", pythonpath=[hello_site]).stdout.strip() == "Hello, Lin!"
    bad = noa_cli("--set", "drivers.greeter=loud", "hello", "Lin", pythonpath=[hello_site])
    assert bad.returncode == 1
    assert bad.stderr.strip() == (
        "noa: error: driver slot 'greeter' cannot load driver 'loud' (config key drivers.greeter): "
        "no driver of that name is "
        "installed (available: plain, shouting)"
    )


def test_new_plugin_from_the_template_installs_lists_and_passes_its_tests(
    noa_cli: Any, tmp_path: Path
) -> None:
    created = noa_cli("plugins", "new", "weather_report")
    assert created.returncode == 0, created.stderr
    package = tmp_path / "noa-plugin-weather-report"
    assert (package / "src" / "noa_plugin_weather_report" / "plugin.py").is_file()

    site = pip_install(package, tmp_path / "site")
    rows = {
        r["name"]: r
        for r in json.loads(noa_cli("plugins", "list", "--json", pythonpath=[site]).stdout)
    }
    assert rows["weather_report"]["distribution"] == "noa-plugin-weather-report"

    tests = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(package),
            "-o",
            "asyncio_mode=auto",
            str(package / "tests"),
        ],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("NOA_")},
            "PYTHONPATH": str(site),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "5 passed" in tests.stdout

    again = noa_cli("plugins", "new", "weather_report")
    assert again.returncode == 2
    assert "already exists" in again.stderr
    assert noa_cli("plugins", "new", "Bad-Name").returncode == 2
