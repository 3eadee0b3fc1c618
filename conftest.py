"""Fixtures shared by every test folder: installed-for-real test distributions, free
ports and a real ``noa serve`` process."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from noa.plugin_sdk.testing.requirements import missing

REPO = Path(__file__).resolve().parent
NOA = str(Path(sys.executable).with_name("noa"))


def make_dist(
    root: Path,
    name: str,
    entry_points: Mapping[str, Mapping[str, str]],
    modules: Mapping[str, str],
    version: str = "0.1.0",
) -> Path:
    """Write a real installed distribution (dist-info + modules) under ``root``.

    importlib.metadata finds it like any pip-installed package once ``root`` is on
    ``sys.path`` (in-process) or ``PYTHONPATH`` (subprocesses).
    """
    root.mkdir(parents=True, exist_ok=True)
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, items in entry_points.items():
        lines.append(f"[{group}]")
        lines.extend(f"{key} = {target}" for key, target in items.items())
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for module, source in modules.items():
        path = root / (module.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``installed(name, entry_points, modules)``: install a test distribution in-process."""
    import importlib

    def install(
        name: str, entry_points: Mapping[str, Mapping[str, str]], modules: Mapping[str, str]
    ) -> Path:
        root = make_dist(tmp_path / f"site-{name}", name, entry_points, modules)
        monkeypatch.syspath_prepend(str(root))
        importlib.invalidate_caches()
        return root

    return install


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A real ``noa serve`` child process and where it listens."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.url = f"http://127.0.0.1:{port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Seconds until ``/ready`` answered 200; fails with the server's output if never."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                pytest.fail(f"noa serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/ready", timeout=1.0).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        pytest.fail(f"noa serve not ready after {timeout} s:\n{self.output()}")

    def kill(self) -> None:
        """SIGKILL the server and every worker it started."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def wait_listening(self, timeout: float = 30.0) -> httpx.Response:
        """The first answer of ``/ready``, whatever its status."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                pytest.fail(f"noa serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                return httpx.get(self.url + "/ready", timeout=1.0)
            except httpx.HTTPError:
                time.sleep(0.05)
        pytest.fail(f"noa serve not listening after {timeout} s:\n{self.output()}")

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"noa serve ignored SIGTERM for {timeout} s:\n{self.output()}")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """``serve(*args, env=..., pythonpath=[...])`` starts ``noa serve`` in ``tmp_path``."""
    started: list[ServerProcess] = []

    def start(
        *args: str, env: Mapping[str, str] | None = None, pythonpath: list[Path] | None = None
    ) -> ServerProcess:
        port = free_port()
        log = tmp_path / f"serve-{port}.log"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("NOA_")}
        environ.update(env or {})
        if pythonpath:
            environ["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [NOA, "serve", "--port", str(port), *args],
                cwd=tmp_path,
                env=environ,
                stdout=sink,
                stderr=subprocess.STDOUT,
                # Its own process group: cleaning up kills granian's workers too, which
                # outlive a main process killed alone.
                start_new_session=True,
            )
        server = ServerProcess(proc, port, log)
        started.append(server)
        return server

    yield start
    for server in started:
        # Also when the main process has exited: its workers may not have.
        server.kill()


def run_noa(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    pythonpath: list[Path] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run the real ``noa`` command; returns the completed process (text output)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NOA_")}
    environ.update(env or {})
    if pythonpath:
        environ["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    return subprocess.run(
        [NOA, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def noa_cli(tmp_path: Path) -> Any:
    """``noa_cli(*args, env=..., pythonpath=..., cwd=...)`` runs the real ``noa`` command."""

    def run(*args: str, cwd: Path | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return run_noa(*args, cwd=cwd or tmp_path, **kwargs)

    return run


@pytest.fixture
def dist_factory(tmp_path: Path) -> Any:
    """``dist_factory(name, entry_points, modules)`` writes a distribution for PYTHONPATH."""

    def make(
        name: str, entry_points: Mapping[str, Mapping[str, str]], modules: Mapping[str, str]
    ) -> Path:
        return make_dist(tmp_path / f"site-{name}", name, entry_points, modules)

    return make


# -- services -------------------------------------------------------------------------
# Tests marked postgres / redis / nats talk to the real service. Outside CI a missing
# service skips them with the reason shown; under CI (CI=true) it fails them.

SERVICES = {"postgres": 5432, "redis": 6379, "nats": 4222}


def service_address(name: str) -> tuple[str, int]:
    """Where the tests look for a service: NOA_TEST_<NAME>_ADDR=host:port, else loopback."""
    raw = os.environ.get(f"NOA_TEST_{name.upper()}_ADDR")
    if raw:
        host, _, port = raw.rpartition(":")
        return host or "127.0.0.1", int(port)
    return "127.0.0.1", SERVICES[name]


def service_missing(host: str, port: int, timeout: float = 1.0) -> str | None:
    """Why the service at host:port cannot be reached, or None when it answers."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{host}:{port} unreachable ({exc.strerror or exc})"


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers():
        if marker.name in SERVICES:
            reason = service_missing(*service_address(marker.name))
            if reason is None:
                continue
            missing(f"{marker.name} service needed: {reason}", what="service")


# -- private service instances ----------------------------------------------------------
# Tests that stop and restart Redis or NATS use their own instance of the machine's
# server binary on a free port, so the shared service is never stopped under others.


class PrivateServer:
    """One server process on a free loopback port; ``start``/``stop`` as often as needed."""

    def __init__(self, binary: str, scheme: str, args: Callable[[int], list[str]]) -> None:
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self._command = [binary, *args(self.port)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self._command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if service_missing("127.0.0.1", self.port, timeout=0.2) is None:
                return
            time.sleep(0.02)
        raise RuntimeError(f"{self._command[0]} did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def _private(
    binary_names: tuple[str, ...], scheme: str, args: Callable[[int], list[str]]
) -> Iterator[PrivateServer]:
    binary = next(
        (b for b in (shutil.which(n) or n for n in binary_names) if Path(b).exists()), None
    )
    if binary is None:
        missing(f"{binary_names[0]} is not installed", what="service")
    server = PrivateServer(binary, scheme, args)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateServer]:
    """A private redis-server that keeps nothing on disk."""
    yield from _private(
        ("redis-server", "/usr/bin/redis-server"),
        "redis",
        lambda port: [
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
    )


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[PrivateServer]:
    """A private nats-server with JetStream and its own store (kept across restarts)."""
    yield from _private(
        ("nats-server", "/usr/sbin/nats-server"),
        "nats",
        lambda port: [
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            "-js",
            "-sd",
            str(tmp_path / "jetstream"),
        ],
    )
