"""Event fan-out over WebSockets: one publisher, many subscribers on one topic, and the
delivery latency from publish to receipt, against a bare ``websockets`` server.

Targets, each a server process of its own, driven by the same client process:

* ``noa``: ``noa serve`` on the embedded profile (one worker, ``inprocess`` broker) with
  a small benchmark plugin whose ``POST /v1/bench/publish`` publishes the events on the
  bus (``plugin_events.bench.tick``); each subscriber follows ``plugins.bench`` on
  ``/ws/events``, so every event goes broker -> hub -> each client's outbox -> socket,
  framed per client (its own ``seq``).
* ``websockets``: the peer, a bare server of the ``websockets`` library (the client
  library of the tests) that ``broadcast()``s one pre-built frame of the same shape and
  size to every client: no auth, no bus, no per-client framing or buffering policy.

Each event carries its publish time (``time.time()`` in the server); a client notes the
delay when it has read and decoded the frame. The clients run in one process, so on a
small machine they (not the servers) may set the pace: compare the two rows, measured
the same way, rather than the absolute figures.

    .venv/bin/python benchmarks/ws_fanout.py                       # about a minute
    .venv/bin/python benchmarks/ws_fanout.py --subscribers 200 --events 50
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import websockets

NOA = str(Path(sys.executable).with_name("noa"))

BENCH_PLUGIN = """
import asyncio
import json
import time

from litestar import post
from noa.plugin_sdk import RouteGroup, hookimpl
from noa.plugin_sdk.ports.broker import BROKER_STATE_KEY


def handlers(host):
    @post("/v1/bench/publish", status_code=200)
    async def publish(data: dict) -> dict:
        broker = host.state[BROKER_STATE_KEY]
        pad = "x" * int(data["size"])
        for i in range(int(data["events"])):
            event = json.dumps({"i": i, "t": time.time(), "pad": pad})
            await broker.publish("plugin_events.bench.tick", event.encode())
            await asyncio.sleep(float(data["interval_s"]))
        return {"published": data["events"]}

    return [publish]


@hookimpl
def noa_register_routes(routes, host):
    routes.add("bench", RouteGroup(handlers=tuple(handlers(host)), scope="plugins:events"))
"""

PEER_SERVER = """
import asyncio, json, sys, time
from websockets.asyncio.server import broadcast, serve

clients = set()


async def handler(ws):
    first = json.loads(await ws.recv())
    if first["type"] == "publish":
        pad = "x" * first["size"]
        for i in range(first["events"]):
            event = json.dumps({"i": i, "t": time.time(), "pad": pad})
            frame = '{"type":"event","topic":"plugins.bench","seq":%d,"event":%s}' % (i + 1, event)
            broadcast(clients, frame)
            await asyncio.sleep(first["interval_s"])
        await ws.send("done")
        return
    clients.add(ws)
    await ws.send('{"type":"subscribed","topic":"plugins.bench"}')
    try:
        await ws.wait_closed()
    finally:
        clients.discard(ws)


async def main():
    async with serve(handler, "127.0.0.1", int(sys.argv[1]), max_queue=None):
        await asyncio.Future()


asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port} after {timeout} s")


@contextlib.contextmanager
def process(
    command: list[str], cwd: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    log = (cwd / "server.log").open("wb")
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()


async def subscriber(
    url: str, subscribe: str, events: int, delays: list[float], ready: Any
) -> None:
    async with websockets.connect(url, max_queue=None, open_timeout=60) as ws:
        await ws.send(subscribe)
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "subscribed":
                break
        ready()
        seen = 0
        while seen < events:
            frame = json.loads(await ws.recv())
            kind = frame["type"]
            if kind == "event":
                delays.append(time.time() - frame["event"]["t"])
                seen += 1
            elif kind == "ping":
                await ws.send('{"type":"pong"}')
            elif kind == "gap":
                seen += frame["dropped"]


async def fan_out(url: str, subscribers: int, events: int, publish: Any) -> dict[str, float]:
    delays: list[float] = []
    connected = 0
    all_in = asyncio.Event()

    def ready() -> None:
        nonlocal connected
        connected += 1
        if connected == subscribers:
            all_in.set()

    subscribe = json.dumps({"type": "subscribe", "topic": "plugins.bench"})
    started = time.monotonic()
    # Connect in waves: a thousand handshakes at once overflow the listen backlog.
    tasks = []
    for n in range(subscribers):
        tasks.append(asyncio.create_task(subscriber(url, subscribe, events, delays, ready)))
        if n % 50 == 49:
            await asyncio.sleep(0.05)
    await asyncio.wait_for(all_in.wait(), 120)
    connect_s = time.monotonic() - started
    await publish()
    await asyncio.wait_for(asyncio.gather(*tasks), 300)
    delays.sort()
    return {
        "connect_s": connect_s,
        "deliveries": len(delays),
        "p50_ms": 1000 * statistics.quantiles(delays, n=100)[49],
        "p99_ms": 1000 * statistics.quantiles(delays, n=100)[98],
        "max_ms": 1000 * delays[-1],
    }


async def run_noa(folder: Path, args: argparse.Namespace) -> dict[str, float]:
    site = folder / "site"
    info = site / "noa_bench_fanout-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: noa-bench-fanout\nVersion: 0.1.0\n"
    )
    (info / "entry_points.txt").write_text("[noa.plugins]\nbench_fanout = bench_fanout\n")
    (site / "bench_fanout.py").write_text(BENCH_PLUGIN)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOA_")}
    env.update(
        {
            "PYTHONPATH": str(site),
            "NOA_OBSERVABILITY__ACCESS_LOG": "false",
            "NOA_STREAMING__SEND_BUFFER": str(args.events + 10),  # measure, never drop
        }
    )
    with process([NOA, "serve", "--port", str(port)], folder, env) as proc:
        wait_port(port, proc)
        async with httpx.AsyncClient(timeout=120) as client:
            for _ in range(600):  # the model and plugins load in the background
                if (await client.get(f"http://127.0.0.1:{port}/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.2)

            async def publish() -> None:
                body = {"events": args.events, "interval_s": args.interval, "size": args.size}
                answer = await client.post(f"http://127.0.0.1:{port}/v1/bench/publish", json=body)
                answer.raise_for_status()

            return await fan_out(
                f"ws://127.0.0.1:{port}/ws/events", args.subscribers, args.events, publish
            )


async def run_peer(folder: Path, args: argparse.Namespace) -> dict[str, float]:
    script = folder / "peer.py"
    script.write_text(PEER_SERVER)
    port = free_port()
    with process([sys.executable, str(script), str(port)], folder, dict(os.environ)) as proc:
        wait_port(port, proc)

        async def publish() -> None:
            async with websockets.connect(f"ws://127.0.0.1:{port}") as ws:
                await ws.send(
                    json.dumps({"type": "publish", "events": args.events,
                                "interval_s": args.interval, "size": args.size})
                )  # fmt: skip
                await ws.recv()

        return await fan_out(f"ws://127.0.0.1:{port}", args.subscribers, args.events, publish)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between events")
    parser.add_argument("--size", type=int, default=200, help="padding bytes per event")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="noa-bench-ws-") as tmp:
        for name, run in (("noa", run_noa), ("websockets", run_peer)):
            folder = Path(tmp) / name
            folder.mkdir()
            results[name] = asyncio.run(run(folder, args))
            row = results[name]
            print(
                f"{name:>10}: {args.subscribers} subscribers x {args.events} events: "
                f"p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, "
                f"max {row['max_ms']:.1f} ms "
                f"({row['deliveries']:.0f} deliveries; connected in {row['connect_s']:.1f} s)",
                flush=True,
            )
    noa, peer = results["noa"], results["websockets"]
    print(
        f"noa / websockets: p50 {noa['p50_ms'] / peer['p50_ms']:.2f}x, "
        f"p99 {noa['p99_ms'] / peer['p99_ms']:.2f}x"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
