"""Fixtures of the streaming tests: real ``noa serve`` processes shared by a module, a
plugin that publishes events on demand, and a WebSocket client that answers pings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from noa.plugin_sdk.testing.requirements import missing

NOA = str(Path(sys.executable).with_name("noa"))
ROOT = Path(__file__).resolve().parents[3]
MODEL = "sentence-transformers/all-MiniLM-L6-v2"

# A third-party-style plugin: POST /v1/flood publishes n events of its own on the bus
# (plugin_events.flood.tick), as fast as the broker takes them.
FLOOD_PLUGIN = """
from litestar import post
from noa.plugin_sdk import RouteGroup, hookimpl
from noa.plugin_sdk.ports.broker import BROKER_STATE_KEY


def handlers(host):
    @post("/v1/flood", status_code=200)
    async def flood(data: dict) -> dict:
        broker = host.state[BROKER_STATE_KEY]
        pad = "x" * int(data.get("size", 10))
        for i in range(int(data["n"])):
            body = '{"i": %d, "pad": "%s"}' % (i, pad)
            await broker.publish("plugin_events.flood.tick", body.encode())
        return {"published": data["n"]}

    return [flood]


@hookimpl
def noa_register_routes(routes, host):
    routes.add("flood", RouteGroup(handlers=tuple(handlers(host)), scope="plugins:events"))
"""


def _write_dist(root: Path) -> Path:
    info = root / "noa_plugin_flood-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: noa-plugin-flood\nVersion: 0.1.0\n"
    )
    (info / "entry_points.txt").write_text("[noa.plugins]\nflood = flood_plugin\n")
    (root / "flood_plugin.py").write_text(FLOOD_PLUGIN)
    return root


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A ``noa serve`` process in its own folder and process group."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}"
        self.log = folder / "serve.log"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("NOA_")}
        environ.update(env)
        environ["PYTHONPATH"] = str(_write_dist(folder / "site"))
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(
                [NOA, "serve", "--port", str(self.port)],
                cwd=folder,
                env=environ,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"noa serve exited with {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/ready", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        pytest.fail(f"noa serve not ready after {timeout} s:\n{self.output()}")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Server]]:
    """``servers(name, env)`` starts a server shared by the module's tests."""
    started: list[Server] = []

    def start(name: str, env: dict[str, str], folder: Path | None = None) -> Server:
        server = Server(folder or tmp_path_factory.mktemp(name), env)
        started.append(server)
        return server

    yield start
    for server in started:  # SIGKILL: these tests are not about shutting down
        server.stop()


def run_noa(folder: Path, *args: str) -> str:
    """Run ``noa ARGS`` in ``folder`` (a server's: same config, same database)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NOA_")}
    done = subprocess.run(
        [NOA, *args], cwd=folder, env=environ, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(name="run_noa", scope="module")
def run_noa_fixture() -> Callable[..., str]:
    return run_noa


def model_repository(folder: Path) -> Path:
    """A repository holding the real all-MiniLM-L6-v2 (a symlink to the one
    scripts/setup fetched, or NOA_TEST_MODEL_DIR)."""
    configured = os.environ.get("NOA_TEST_MODEL_DIR")
    source = Path(configured) if configured else ROOT / ".noa" / "models" / MODEL
    if not (source / "model.safetensors").is_file():
        missing(f"the model {MODEL} is not at {source}; run ./scripts/setup", what="model")
    root = folder / "models"
    (root / "sentence-transformers").mkdir(parents=True, exist_ok=True)
    link = root / MODEL
    if not link.exists():
        link.symlink_to(source, target_is_directory=True)
    return root


async def receive(ws: Any, wait_s: float = 30.0) -> dict[str, Any]:
    """The next frame that is not a ping (pings are answered, as a client should)."""
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), wait_s))
        if frame["type"] != "ping":
            return dict(frame)
        await ws.send(json.dumps({"type": "pong"}))


async def connect(url: str, **kwargs: Any) -> Any:
    """A WebSocket connected and past its "ready" frame."""
    ws = await websockets.connect(url, **kwargs)
    await ws.send(json.dumps({"type": "ping"}))  # a first frame: no credential to wait for
    ready = await receive(ws)
    assert ready["type"] == "ready", ready
    assert (await receive(ws))["type"] == "pong"
    return ws


@pytest.fixture(name="receive")
def receive_fixture() -> Callable[..., Any]:
    return receive


@pytest.fixture(name="connect")
def connect_fixture() -> Callable[..., Any]:
    return connect


@pytest.fixture(name="model_repository", scope="module")
def model_repository_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_repository(tmp_path_factory.mktemp("repo"))
