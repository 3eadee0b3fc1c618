"""The ``noa`` command as a user runs it: help, config show, check, version, exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

COMMANDS = [
    [],
    ["serve"],
    ["plugins"],
    ["plugins", "list"],
    ["plugins", "new"],
    ["config"],
    ["config", "show"],
    ["check"],
    ["version"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "noa")
def test_every_command_has_help(noa_cli: Any, command: list[str]) -> None:
    result = noa_cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: noa")


def test_config_show_names_each_layer_and_masks_secrets(noa_cli: Any, tmp_path: Path) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "default.toml").write_text(
        '[observability]\notlp_endpoint = {env = "OTLP_URL"}\n'
    )
    (config_dir / "embedded.toml").write_text("[server]\nworkers = 2\n")
    result = noa_cli(
        "config",
        "show",
        "--json",
        "--set",
        "http.max_in_flight=7",
        env={"OTLP_URL": "http://user:s3cr3t-pw@collector:4318", "NOA_SERVER__PORT": "9100"},
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["profile"] == "embedded"
    assert shown["values"]["server"]["port"] == 9100
    assert shown["values"]["http"]["max_in_flight"] == 7
    assert shown["values"]["observability"]["otlp_endpoint"] == "********"
    assert "s3cr3t-pw" not in result.stdout
    sources = shown["sources"]
    assert sources["server.port"] == "environment NOA_SERVER__PORT"
    assert sources["server.workers"] == "config/embedded.toml"
    assert sources["observability.otlp_endpoint"] == "config/default.toml"
    assert sources["http.max_in_flight"] == "CLI --set http.max_in_flight"
    assert sources["http.max_body_bytes"] == "built-in default"

    table = noa_cli(
        "config", "show", env={"OTLP_URL": "http://user:s3cr3t-pw@collector:4318"}
    ).stdout
    assert "s3cr3t-pw" not in table
    assert any(
        line.startswith("server.port") and "built-in default" not in line
        for line in table.splitlines()
    )


def test_bad_config_exits_2_with_key_value_and_layer(noa_cli: Any, tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[http]\nmax_in_flight = -3\n")
    result = noa_cli("config", "show", "--config", str(tmp_path / "bad.toml"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"noa: error: config key 'http.max_in_flight' = -3 (from --config {tmp_path / 'bad.toml'}): "
        "Expected `int` >= 1"
    )
    unknown = noa_cli("config", "show", "--profile", "production")
    assert unknown.returncode == 2
    assert "unknown profile (known: dev, embedded, prod, staging)" in unknown.stderr


def test_check_reports_components_and_exit_code(noa_cli: Any, dist_factory: Any) -> None:
    site = dist_factory(
        "noa-plugin-flaky",
        {"noa.plugins": {"flaky": "flaky_plugin"}},
        {
            "flaky_plugin": (
                "import os\n"
                "from noa.plugin_sdk import CheckResult, HealthCheck, hookimpl\n"
                "@hookimpl\n"
                "def noa_register_health_checks(checks):\n"
                "    async def check():\n"
                "        if os.environ.get('FLAKY_DOWN'):\n"
                "            return CheckResult(status='failing', detail='upstream down')\n"
                "    checks.add('upstream', HealthCheck(check=check))\n"
            )
        },
    )
    ok = noa_cli("check", pythonpath=[site])
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[-1] == "status: ready"
    failing = noa_cli("check", "--json", pythonpath=[site], env={"FLAKY_DOWN": "1"})
    assert failing.returncode == 1
    report = json.loads(failing.stdout)
    assert report["status"] == "not_ready"
    upstream = next(c for c in report["components"] if c["name"] == "upstream")
    assert (upstream["plugin"], upstream["detail"]) == ("flaky", "upstream down")


def test_version_names_the_kernel(noa_cli: Any) -> None:
    result = noa_cli("version")
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == "noa-kernel 0.1.0"


def test_serve_refuses_a_missing_certificate_before_starting(noa_cli: Any) -> None:
    result = noa_cli(
        "serve", "--ssl-certificate", "/no/such/cert.pem", "--ssl-keyfile", "/no/such/key.pem"
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "noa: error: config key 'server.ssl_certificate' = '/no/such/cert.pem': file not found"
    )
    half = noa_cli("serve", "--ssl-certificate", "/no/such/cert.pem")
    assert half.returncode == 2
    assert "TLS needs both server.ssl_certificate and server.ssl_keyfile" in half.stderr
