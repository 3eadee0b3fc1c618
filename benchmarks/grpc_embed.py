"""Unary gRPC ``Embed`` calls/s against REST ``POST /v1/embed``: the same server, the
same inputs, the same concurrency, in one run, printed as a ratio.

One ``noa serve --profile embedded`` (one worker, gRPC on) serves both. For each
transport, ``--concurrency`` client tasks in this process send one short text per call
for ``--duration`` seconds after a warm-up: grpc.aio with the generated stub over one
HTTP/2 channel, and an aiohttp session (HTTP/1.1, a keep-alive pool) for REST. The model
is the real all-MiniLM-L6-v2 from ``scripts/setup``. Run from the repository root::

    .venv/bin/python benchmarks/grpc_embed.py [--duration 10] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import grpc
import httpx
from noa.proto.v1 import inference_pb2 as pb
from noa.proto.v1 import inference_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [f"benchmark sentence number {i} about rivers and mountains" for i in range(64)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def drive(call: object, concurrency: int, duration: float, warmup: float) -> float:
    """Calls/s of ``call(i)`` run by ``concurrency`` tasks for ``duration`` seconds."""
    done = 0
    counting = False
    stop = False

    async def worker(k: int) -> None:
        nonlocal done
        i = k
        while not stop:
            await call(TEXTS[i % len(TEXTS)])  # type: ignore[operator]
            if counting:
                done += 1
            i += concurrency

    tasks = [asyncio.create_task(worker(k)) for k in range(concurrency)]
    await asyncio.sleep(warmup)
    counting = True
    started = time.perf_counter()
    await asyncio.sleep(duration)
    counting = False
    elapsed = time.perf_counter() - started
    stop = True
    await asyncio.gather(*tasks)
    return done / elapsed


async def measure(http_port: int, grpc_port: int, args: argparse.Namespace) -> dict[str, float]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
    stub = pb_grpc.InferenceServiceStub(channel)
    # aiohttp, not httpx: httpx's client costs more CPU per call than the server's
    # answer on two cores, which would make REST look slower than it is.
    client = aiohttp.ClientSession(
        f"http://127.0.0.1:{http_port}",
        connector=aiohttp.TCPConnector(limit=args.concurrency),
        timeout=aiohttp.ClientTimeout(total=30),
    )

    async def grpc_call(text: str) -> None:
        await stub.Embed(pb.EmbedRequest(input=[text]), timeout=30)

    async def rest_call(text: str) -> None:
        async with client.post("/v1/embed", json={"input": [text]}) as response:
            response.raise_for_status()
            await response.read()

    results = {}
    try:
        for name, call in (("grpc", grpc_call), ("rest", rest_call)):
            results[name] = await drive(call, args.concurrency, args.duration, args.warmup)
    finally:
        await client.close()
        await channel.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    http_port, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOA_")}
    env.update(
        NOA_INFERENCE__REPOSITORY=str(ROOT / ".noa" / "models"),
        NOA_GRPC__ENABLED="true",
        NOA_GRPC__PORT=str(grpc_port),
        NOA_OBSERVABILITY__ACCESS_LOG="false",
    )
    noa = str(Path(sys.executable).with_name("noa"))
    with tempfile.TemporaryDirectory(prefix="noa-bench-") as cwd:
        server = subprocess.Popen(
            [noa, "serve", "--profile", "embedded", "--port", str(http_port)],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{http_port}/ready").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            else:
                raise SystemExit("the server did not turn ready in 120 s")
            results = asyncio.run(measure(http_port, grpc_port, args))
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
    ratio = results["grpc"] / results["rest"]
    print(f"concurrency {args.concurrency}, {args.duration:g} s per transport, 1 text per call")
    print(f"gRPC Embed     {results['grpc']:8.1f} calls/s")
    print(f"REST /v1/embed {results['rest']:8.1f} calls/s")
    print(f"gRPC / REST    {ratio:8.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({**results, "ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
