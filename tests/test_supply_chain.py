"""packaging/supply-chain, run as a process: the SBOM is the runtime set, a known
vulnerability fails the audit unless accepted with a reason, and an audit that could
not reach its service is SKIPPED, never clean.

Neither vulnerability service is reachable from every build machine, so the verdicts
are checked against a stand-in OSV endpoint on loopback (pip-audit talks to it as to
api.osv.dev); the same checks against the real services skip, saying why, where those
cannot be reached.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "packaging" / "supply-chain"

# requests 2.19.0's first advisory, as OSV publishes it.
ADVISORY = {
    "schema_version": "1.6.0",
    "id": "PYSEC-2018-28",
    "aliases": ["CVE-2018-18074", "GHSA-x84v-xcm2-53pg"],
    "summary": "requests sends an HTTP Authorization header to an http URI upon redirect",
    "affected": [
        {
            "package": {"name": "requests", "ecosystem": "PyPI"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.20.0"}]}],
        }
    ],
}


class StandInOSV(ThreadingHTTPServer):
    """Answers OSV's POST /v1/query from `advisories`, keyed by (name, version)."""

    advisories: dict[tuple[str, str], list[dict[str, Any]]]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/query"


class _Query(BaseHTTPRequestHandler):
    server: StandInOSV

    def do_POST(self) -> None:
        query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        key = (query["package"]["name"], query["version"])
        found = self.server.advisories.get(key)
        body = json.dumps({"vulns": found} if found else {}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def osv() -> Iterator[StandInOSV]:
    server = StandInOSV(("127.0.0.1", 0), _Query)
    server.advisories = {("requests", "2.19.0"): [ADVISORY]}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # Loopback never goes through a proxy the machine may set.
    base = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=120,
        check=False,
    )


def requirements(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "requirements.txt"
    path.write_text("".join(f"{line}\n" for line in lines))
    return str(path)


def test_sbom_components_are_the_locked_runtime_set(tmp_path: Path) -> None:
    sbom = tmp_path / "sbom.cdx.json"
    done = run("--sbom-only", "--sbom", str(sbom))
    assert done.returncode == 0, done.stderr
    text = sbom.read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    document = json.loads(text)
    assert (document["bomFormat"], document["specVersion"]) == ("CycloneDX", "1.6")
    assert document["metadata"]["component"]["name"] == "noa-workspace"
    components = {(canonicalize_name(c["name"]), c["version"]) for c in document["components"]}
    assert all(c["purl"].startswith("pkg:pypi/") for c in document["components"])

    uv = [found] if (found := shutil.which("uv")) else ["python3", "-m", "uv"]
    export = subprocess.run(
        [*uv, "export", "--frozen", "--no-dev", "--no-emit-workspace", "--no-hashes"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    runtime = set()
    for line in export.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate():
                (pin,) = requirement.specifier
                runtime.add((canonicalize_name(requirement.name), pin.version))
    assert components == runtime
    assert not any(name.startswith("noa-") for name, _ in components)

    # What `uv sync` installed here agrees, name and version (the venv also holds dev tools).
    installed = {
        (canonicalize_name(d.metadata["Name"]), d.version) for d in metadata.distributions()
    }
    assert components <= installed


def test_a_known_vulnerability_fails_the_audit_unless_accepted_with_a_reason(
    tmp_path: Path, osv: StandInOSV
) -> None:
    audited = requirements(tmp_path, "requests==2.19.0", "idna==2.7")
    service = ("--audit-only", "--service", "osv", "--osv-url", osv.url)
    none = tmp_path / "none.toml"
    none.write_text("")

    failed = run("--requirements", audited, "--ignore-file", str(none), *service)
    assert failed.returncode == 1, failed.stderr
    assert (
        "vulnerability audit FAILED: 1 known vulnerability in 1 package (osv; none accepted):"
        in failed.stdout
    )
    assert (
        "  requests 2.19.0: PYSEC-2018-28 (CVE-2018-18074, GHSA-x84v-xcm2-53pg); fixed in: 2.20.0"
        in failed.stdout
    )

    accepted = tmp_path / "accepted.toml"
    accepted.write_text(
        '[[ignore]]\nid = "PYSEC-2018-28"\nreason = "NOA never follows redirects with credentials"\n'
    )
    passed = run("--requirements", audited, "--ignore-file", str(accepted), *service)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "vulnerability audit passed: no known vulnerabilities in 2 runtime dependencies" in (
        passed.stdout
    )
    assert "accepted PYSEC-2018-28: NOA never follows redirects with credentials" in passed.stdout


@pytest.mark.parametrize(
    "entry", ['id = "PYSEC-2018-28"', 'id = "PYSEC-2018-28"\nreason = "  "'], ids=["no", "blank"]
)
def test_an_ignore_entry_without_a_reason_is_rejected(tmp_path: Path, entry: str) -> None:
    ignore = tmp_path / "ignore.toml"
    ignore.write_text(f"[[ignore]]\n{entry}\n")
    done = run("--audit-only", "--ignore-file", str(ignore))
    assert done.returncode == 2
    assert f"{ignore}: ignore entry 1 (PYSEC-2018-28) has no reason" in done.stderr
    assert "vulnerability audit" not in done.stdout


def test_an_unreachable_service_skips_the_audit_and_is_never_clean(tmp_path: Path) -> None:
    with socket.socket() as closed:  # bound, never listening: every connection is refused
        closed.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{closed.getsockname()[1]}"
        sbom = tmp_path / "sbom.cdx.json"
        done = run(
            "--sbom",
            str(sbom),
            env={"HTTPS_PROXY": proxy, "https_proxy": proxy, "NO_PROXY": "", "no_proxy": ""},
        )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "vulnerability audit SKIPPED: pypi unreachable (ProxyError(" in done.stdout
    assert "runtime dependencies were NOT checked for known vulnerabilities" in done.stdout
    assert "no known vulnerabilities" not in (done.stdout + done.stderr).lower()
    assert sbom.exists()  # the SBOM needs no network


def test_a_service_that_knows_no_advisory_for_the_canary_is_skipped(
    tmp_path: Path, osv: StandInOSV
) -> None:
    osv.advisories = {}  # answers every query, knows nothing: a mirror without the data
    done = run("--audit-only", "--service", "osv", "--osv-url", osv.url)
    assert done.returncode == 3, done.stdout + done.stderr
    assert (
        "vulnerability audit SKIPPED: osv unreachable (it reports no advisory for the "
        "known-vulnerable canary requests==2.19.0" in done.stdout
    )
    assert "no known vulnerabilities" not in done.stdout.lower()


@pytest.mark.parametrize("service", ["pypi", "osv"])
def test_the_real_service_reports_a_published_advisory(tmp_path: Path, service: str) -> None:
    audited = requirements(tmp_path, "requests==2.19.0")
    done = run("--audit-only", "--requirements", audited, "--service", service)
    if done.returncode == 3:
        pytest.skip(done.stdout.splitlines()[0])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "requests 2.19.0: " in done.stdout
    assert "CVE-2018-18074" in done.stdout


def test_help_documents_outputs_exit_codes_and_the_ignore_file() -> None:
    done = run("--help")
    assert done.returncode == 0
    for text in (
        "build/sbom.cdx.json",
        "packaging/audit-ignore.toml",
        "  0  the SBOM is written",
        "  1  known vulnerabilities found",
        "  2  misuse or tool error",
        "  3  audit SKIPPED",
        "[[ignore]]",
        "reason = ",
    ):
        assert text in done.stdout
