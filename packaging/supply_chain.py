"""The supply-chain check run at packaging time (``packaging/supply-chain``).

It writes a CycloneDX SBOM of the runtime dependencies and audits the same set with
pip-audit. The set is uv.lock's runtime export (no dev group, no workspace members),
with environment markers evaluated for the interpreter that runs this script, so it is
exactly what ``uv sync --frozen --no-dev`` installs here, name and version.

An audit that could not ask its vulnerability service about every dependency is never
reported clean: pip-audit itself answers "No known vulnerabilities found" when the
service answered 404 for every package (a registry mirror without the JSON API), so a
known-vulnerable canary release is audited first and must come back vulnerable.
docs/supply-chain.md is the operator's page.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]

CLEAN, VULNERABLE, ERROR, SKIPPED = 0, 1, 2, 3

SERVICES = {"pypi": "pypi.org", "osv": "api.osv.dev"}

# A release with long-published advisories (CVE-2018-18074 and later): a service that
# reports nothing for it is not answering, whatever its HTTP status says.
CANARY = "requests==2.19.0"

# How a failure to reach or hear from the service shows in pip-audit's stderr (it exits
# 1 for these, as for findings, and some escape it as tracebacks).
_SERVICE_FAILURE = re.compile(
    r"ConnectionError|ProxyError|SSLError|Timeout|NameResolution|Max retries exceeded"
    r"|Failed to resolve|Connection refused|Network is unreachable|timed out"
    r"|Could not connect|network may be blocking|ServiceError|HTTPError"
)

HELP = f"""\
Write a CycloneDX SBOM of NOA's runtime dependencies and audit them for known
vulnerabilities.

The runtime set is uv.lock's export without the dev group and without the workspace's
own distributions (noa-*: they are the SBOM's subject, metadata.component, not its
components), markers evaluated for this interpreter: what `uv sync --frozen --no-dev`
installs here. The SBOM's components are exactly that set, name and version.

The audit runs pip-audit on the same pinned set (--no-deps --disable-pip: nothing is
resolved or installed) against the chosen vulnerability service, with a fresh HTTP
cache so an offline run is never answered from old responses. Advisories listed in the
ignore file, each with a reason, are passed as --ignore-vuln.

exit codes:
  {CLEAN}  the SBOM is written and the audit found no known vulnerabilities
  {VULNERABLE}  known vulnerabilities found (package, version, id, fix versions printed)
  {ERROR}  misuse or tool error (bad option, bad ignore file, uv/pip-audit/cyclonedx failed)
  {SKIPPED}  audit SKIPPED: the vulnerability service could not be reached or did not
     answer for every dependency ("vulnerability audit SKIPPED: <service> unreachable
     (<reason>)"); the SBOM is still written, nothing is reported clean

ignore file (TOML), one table per accepted advisory, both keys required:
  [[ignore]]
  id = "GHSA-xxxx-xxxx-xxxx"   # or PYSEC-..., CVE-...: any id or alias pip-audit reports
  reason = "why NOA is not exposed, or what blocks the upgrade"
"""


class UsageError(Exception):
    """Bad input or a tool that failed: exit code 2."""


class ServiceUnreachable(Exception):
    """The vulnerability service gave no usable answer: exit code 3."""


@dataclass(frozen=True, slots=True)
class Pin:
    name: str
    version: str

    @property
    def key(self) -> tuple[str, str]:
        return canonicalize_name(self.name), self.version


@dataclass(frozen=True, slots=True)
class IgnoreEntry:
    id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Finding:
    name: str
    version: str
    id: str
    aliases: tuple[str, ...]
    fix_versions: tuple[str, ...]


def locked_runtime_requirements() -> str:
    """uv.lock's runtime requirements for every platform, pinned, as uv exports them."""
    # As scripts/setup finds it: on PATH, else the module pip installed.
    uv = [found] if (found := shutil.which("uv")) else ["python3", "-m", "uv"]
    command = [
        *uv,
        "export",
        "--frozen",
        "--no-dev",
        "--no-emit-workspace",
        "--no-hashes",
        "--no-header",
        "--no-annotate",
        "--format",
        "requirements.txt",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise UsageError(f"`{' '.join(command)}` failed:\n{done.stderr.strip()}")
    return done.stdout


def pins_for_this_interpreter(text: str, source: str) -> list[Pin]:
    """The `name==version` lines of a requirements text whose markers hold here."""
    pins: dict[str, Pin] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}, line {number}"
        try:
            requirement = Requirement(line)
        except InvalidRequirement as error:
            raise UsageError(f"{where}: not a requirement ({error}): {line}") from None
        specifiers = list(requirement.specifier)
        if requirement.url or len(specifiers) != 1 or specifiers[0].operator != "==":
            raise UsageError(f"{where}: not pinned to one version (name==version): {line}")
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        pin = Pin(requirement.name, specifiers[0].version)
        if pin.key[0] in pins:
            raise UsageError(f"{where}: {pin.name} is pinned twice for this interpreter")
        pins[pin.key[0]] = pin
    if not pins:
        raise UsageError(f"{source}: no pinned requirement applies to this interpreter")
    return sorted(pins.values(), key=lambda pin: pin.key)


def load_ignore_file(path: Path) -> list[IgnoreEntry]:
    """The accepted advisories; an entry without an id or a reason is an error."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UsageError(f"cannot read the ignore file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{path}: not valid TOML: {error}") from None
    unknown = set(document) - {"ignore"}
    if unknown:
        raise UsageError(f"{path}: unknown keys {sorted(unknown)}; only [[ignore]] tables")
    tables = document.get("ignore", [])
    if not isinstance(tables, list):
        raise UsageError(f"{path}: `ignore` must be an array of tables ([[ignore]])")
    entries: list[IgnoreEntry] = []
    for index, table in enumerate(tables, start=1):
        if not isinstance(table, dict):
            raise UsageError(f"{path}: ignore entry {index} is not a table")
        advisory = table.get("id")
        if not isinstance(advisory, str) or not advisory.strip() or " " in advisory.strip():
            raise UsageError(f'{path}: ignore entry {index} needs an advisory id (id = "...")')
        advisory = advisory.strip()
        reason = table.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise UsageError(
                f"{path}: ignore entry {index} ({advisory}) has no reason: say why it is "
                'accepted (reason = "...")'
            )
        extra = set(table) - {"id", "reason"}
        if extra:
            raise UsageError(
                f"{path}: ignore entry {index} ({advisory}): unknown keys {sorted(extra)}"
            )
        if any(entry.id == advisory for entry in entries):
            raise UsageError(f"{path}: {advisory} is listed twice")
        entries.append(IgnoreEntry(advisory, reason.strip()))
    return entries


def write_sbom(pins: list[Pin], requirements: Path, out: Path) -> None:
    """A CycloneDX JSON SBOM whose components are exactly `pins`, checked after writing."""
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "cyclonedx_py",
        "requirements",
        str(requirements),
        "--pyproject",
        str(ROOT / "pyproject.toml"),
        "--spec-version",
        "1.6",
        "--output-format",
        "JSON",
        "--output-reproducible",
        "--validate",
        "--output-file",
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise UsageError(f"cyclonedx-py failed ({done.returncode}):\n{done.stderr.strip()}")
    components = json.loads(out.read_text(encoding="utf-8")).get("components", [])
    written = {(canonicalize_name(c["name"]), c.get("version", "")) for c in components}
    expected = {pin.key for pin in pins}
    if written != expected:
        raise UsageError(
            f"{out}: components differ from the runtime set: missing "
            f"{sorted(expected - written)}, unexpected {sorted(written - expected)}"
        )


@dataclass(frozen=True, slots=True)
class Service:
    """Which vulnerability service pip-audit asks, and how."""

    name: str
    osv_url: str | None
    timeout: int

    @property
    def host(self) -> str:
        return urlsplit(self.osv_url).netloc if self.osv_url else SERVICES[self.name]

    def arguments(self) -> list[str]:
        url = ["--osv-url", self.osv_url] if self.osv_url else []
        return ["--vulnerability-service", self.name, *url, "--timeout", str(self.timeout)]


def _pip_audit(
    requirements: Path, service: Service, ignores: list[IgnoreEntry], work: Path
) -> dict[str, Any]:
    """pip-audit's JSON report; raises ServiceUnreachable when the service did not answer."""
    report = work / f"report-{requirements.stem}.json"
    command = [
        sys.executable,
        "-m",
        "pip_audit",
        "--requirement",
        str(requirements),
        "--no-deps",
        "--disable-pip",
        *service.arguments(),
        "--format",
        "json",
        "--aliases",
        "on",
        "--desc",
        "off",
        "--progress-spinner",
        "off",
        # A fresh cache: an offline run must not be answered from old responses.
        "--cache-dir",
        str(work / "http-cache"),
        "--output",
        str(report),
        *(arg for entry in ignores for arg in ("--ignore-vuln", entry.id)),
    ]
    report.unlink(missing_ok=True)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode in (0, 1) and report.exists():
        try:
            parsed: dict[str, Any] = json.loads(report.read_text(encoding="utf-8"))
            return parsed
        except json.JSONDecodeError:
            pass
    if _SERVICE_FAILURE.search(done.stderr):
        raise ServiceUnreachable(_network_reason(done.stderr))
    raise UsageError(f"pip-audit failed ({done.returncode}):\n{done.stderr.strip()[-2000:]}")


def _network_reason(stderr: str) -> str:
    """The one line of pip-audit's stderr that says why the service did not answer."""
    lines = [line.strip() for line in stderr.splitlines() if _SERVICE_FAILURE.search(line)]
    reason = next((line for line in reversed(lines) if "Tip:" not in line), lines[-1])
    reason = reason.split("(Caused by ", 1)[-1]
    reason = re.sub(r"<[^>]* object at 0x[0-9a-f]+>: ", "", reason)
    reason = re.sub(r"^ERROR:[\w.]+:", "", reason).strip()
    while reason.endswith(")") and reason.count(")") > reason.count("("):
        reason = reason[:-1]  # the closing parentheses of the wrapper that was cut off
    return reason if len(reason) <= 300 else reason[:297] + "..."


def _dependencies(report: dict[str, Any]) -> list[dict[str, Any]]:
    dependencies = report.get("dependencies")
    if not isinstance(dependencies, list):
        raise UsageError("pip-audit's JSON report has no dependency list")
    return dependencies


def audit(
    pins: list[Pin], service: Service, ignores: list[IgnoreEntry], work: Path
) -> list[Finding]:
    """Known vulnerabilities in `pins` not accepted by `ignores`.

    Raises ServiceUnreachable unless the service answered for the canary and for
    every pin.
    """
    canary = work / "canary.txt"
    canary.write_text(CANARY + "\n", encoding="utf-8")
    answered = _dependencies(_pip_audit(canary, service, [], work))
    if not answered or "skip_reason" in answered[0]:
        said = answered[0].get("skip_reason", "nothing") if answered else "nothing"
        raise ServiceUnreachable(f"the known-vulnerable canary {CANARY} was not looked up: {said}")
    if not answered[0].get("vulns"):
        raise ServiceUnreachable(
            f"it reports no advisory for the known-vulnerable canary {CANARY}: "
            "its vulnerability data is missing"
        )

    requirements = work / "runtime.txt"
    requirements.write_text("".join(f"{p.name}=={p.version}\n" for p in pins), encoding="utf-8")
    dependencies = _dependencies(_pip_audit(requirements, service, ignores, work))
    skipped = [f"{d.get('name')}: {d['skip_reason']}" for d in dependencies if "skip_reason" in d]
    if skipped:
        raise ServiceUnreachable(
            f"{len(skipped)} of {len(pins)} dependencies could not be looked up, first {skipped[0]}"
        )
    findings = [
        Finding(
            name=str(dependency["name"]),
            version=str(dependency["version"]),
            id=str(vuln["id"]),
            aliases=tuple(sorted(vuln.get("aliases", ()))),
            fix_versions=tuple(vuln.get("fix_versions", ())),
        )
        for dependency in dependencies
        for vuln in dependency.get("vulns", ())
    ]
    return sorted(findings, key=lambda f: (canonicalize_name(f.name), f.id))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="packaging/supply-chain",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--requirements",
        type=Path,
        metavar="FILE",
        help="describe and audit this pinned requirements file (name==version lines) "
        "instead of uv.lock's runtime export",
    )
    parser.add_argument(
        "--sbom",
        type=Path,
        default=ROOT / "build" / "sbom.cdx.json",
        metavar="FILE",
        help="where the CycloneDX JSON SBOM goes (default: build/sbom.cdx.json)",
    )
    parser.add_argument(
        "--ignore-file",
        type=Path,
        default=ROOT / "packaging" / "audit-ignore.toml",
        metavar="FILE",
        help="accepted advisories, each with a reason (default: packaging/audit-ignore.toml)",
    )
    parser.add_argument(
        "--service",
        choices=sorted(SERVICES),
        default="pypi",
        help="vulnerability service: pypi (the pypi.org JSON API) or osv (api.osv.dev); "
        "default pypi",
    )
    parser.add_argument(
        "--osv-url",
        metavar="URL",
        help="with --service osv: the OSV query endpoint, for a self-hosted OSV "
        "(default: https://api.osv.dev/v1/query)",
    )
    parser.add_argument(
        "--timeout",
        type=int,
        default=15,
        metavar="SECONDS",
        help="socket timeout for each request to the service (default: 15)",
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--sbom-only", action="store_true", help="write the SBOM, skip the audit")
    only.add_argument("--audit-only", action="store_true", help="audit, write no SBOM")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.osv_url and args.service != "osv":
        parser.error("--osv-url needs --service osv")
    try:
        return _run(args)
    except UsageError as error:
        print(f"supply-chain: error: {error}", file=sys.stderr)
        return ERROR


def _run(args: argparse.Namespace) -> int:
    ignores = [] if args.sbom_only else load_ignore_file(args.ignore_file)
    if args.requirements is not None:
        try:
            text = args.requirements.read_text(encoding="utf-8")
        except OSError as error:
            raise UsageError(f"cannot read {args.requirements}: {error.strerror}") from None
        pins = pins_for_this_interpreter(text, str(args.requirements))
        subject = str(args.requirements)
    else:
        pins = pins_for_this_interpreter(locked_runtime_requirements(), "uv.lock export")
        subject = "uv.lock's runtime dependencies"

    with tempfile.TemporaryDirectory(prefix="noa-supply-chain-") as tmp:
        work = Path(tmp)
        pinned = work / "pinned-requirements.txt"
        pinned.write_text("".join(f"{p.name}=={p.version}\n" for p in pins), encoding="utf-8")
        if not args.audit_only:
            write_sbom(pins, pinned, args.sbom)
            print(f"SBOM written: {args.sbom} (CycloneDX 1.6, {len(pins)} components: {subject})")
        if args.sbom_only:
            return CLEAN
        service = Service(args.service, args.osv_url, args.timeout)
        try:
            findings = audit(pins, service, ignores, work)
        except ServiceUnreachable as unreachable:
            print(f"vulnerability audit SKIPPED: {args.service} unreachable ({unreachable})")
            print(
                f"The {len(pins)} runtime dependencies were NOT checked for known "
                f"vulnerabilities; run again where {service.host} can be reached."
            )
            return SKIPPED

    accepted = f"{len(ignores)} accepted in {args.ignore_file}" if ignores else "none accepted"
    if findings:
        packages = len({f.name for f in findings})
        print(
            f"vulnerability audit FAILED: {_count(len(findings), 'known vulnerability')} in "
            f"{_count(packages, 'package')} ({args.service}; {accepted}):"
        )
        for f in findings:
            aliases = f" ({', '.join(f.aliases)})" if f.aliases else ""
            fixes = ", ".join(f.fix_versions) or "none yet"
            print(f"  {f.name} {f.version}: {f.id}{aliases}; fixed in: {fixes}")
        print(f"Upgrade, or accept an advisory with a reason in {args.ignore_file}.")
        return VULNERABLE
    print(
        f"vulnerability audit passed: no known vulnerabilities in {len(pins)} runtime "
        f"dependencies ({args.service}; {accepted})"
    )
    for entry in ignores:
        print(f"  accepted {entry.id}: {entry.reason}")
    return CLEAN


def _count(number: int, noun: str) -> str:
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{number} {noun if number == 1 else plural}"


if __name__ == "__main__":
    sys.exit(main())
