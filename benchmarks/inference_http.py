"""Does dynamic batching pay? Single-sentence ``/v1/embed`` requests over real HTTP.

Starts ``noa serve --profile embedded`` (the default model must be in ``.noa/models``:
``./scripts/setup`` puts it there), then in one run and on one server:

* **sequential**: N requests of one short sentence each, one at a time;
* **concurrent**: the same N requests from 64 concurrent clients.

Reports requests/s, p50 and p99 latency of each, the concurrent/sequential throughput
ratio (the issue's target: >= 5x), and the mean batch size the server computed (from
``inference_batch_size`` in ``/metrics``). Rounds alternate the two modes.

    .venv/bin/python benchmarks/inference_http.py [--requests 1024] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
NOA = str(ROOT / ".venv" / "bin" / "noa")
WORDS = [
    "river",
    "mountain",
    "quiet",
    "engine",
    "lantern",
    "harbor",
    "violet",
    "copper",
    "meadow",
    "signal",
    "winter",
    "garden",
    "orbit",
    "pencil",
    "thunder",
    "marble",
    "canyon",
    "velvet",
    "ember",
    "compass",
]


def sentence(i: int) -> str:
    words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(8)]
    return f"Request {i}: " + " ".join(words) + "."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOA_")}
    env["NOA_INFERENCE__REPOSITORY"] = str(ROOT / ".noa" / "models")
    env["NOA_OBSERVABILITY__ACCESS_LOG"] = "false"
    return subprocess.Popen(
        [NOA, "serve", "--profile", "embedded", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"noa serve exited with {proc.returncode}")
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    sys.exit("noa serve did not become ready")


async def run(client: httpx.AsyncClient, n: int, concurrency: int, offset: int) -> list[float]:
    latencies: list[float] = []
    queue = list(range(offset, offset + n))

    async def worker() -> None:
        while queue:
            i = queue.pop()
            started = time.perf_counter()
            response = await client.post("/v1/embed", json={"input": sentence(i)})
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"{response.status_code}: {response.text}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def batch_stats(url: str) -> tuple[float, float]:
    text = httpx.get(url + "/metrics", timeout=5).text
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("inference_batch_size_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("inference_batch_size_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


def summary(latencies: list[float], wall: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "rps": len(latencies) / wall,
        "p50_ms": statistics.median(ordered) * 1e3,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
    }


async def measure(url: str, n: int, rounds: int) -> dict[str, object]:
    results: dict[str, list[dict[str, float]]] = {"sequential": [], "concurrent": []}
    batches: list[float] = []
    limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        await run(client, 64, 64, 10_000_000)  # warm up
        offset = 0
        for _ in range(rounds):
            for mode, concurrency in (("sequential", 1), ("concurrent", 64)):
                before = batch_stats(url)
                started = time.perf_counter()
                latencies = await run(client, n, concurrency, offset)
                wall = time.perf_counter() - started
                after = batch_stats(url)
                offset += n
                results[mode].append(summary(latencies, wall))
                if mode == "concurrent":
                    batches.append((after[0] - before[0]) / max(after[1] - before[1], 1))
    median = {
        mode: {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        for mode, rows in results.items()
    }
    return {
        **median,
        "ratio": median["concurrent"]["rps"] / median["sequential"]["rps"],
        "mean_batch_size": statistics.median(batches),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="256 requests, 1 round")
    parser.add_argument("--json", type=Path, help="write the result here too")
    args = parser.parse_args()
    n, rounds = (256, 1) if args.quick else (args.requests, args.rounds)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="noa-bench-") as workdir:
        proc = start_server(Path(workdir), port)
        try:
            wait_ready(url, proc)
            result = asyncio.run(measure(url, n, rounds))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
    for mode in ("sequential", "concurrent"):
        r = result[mode]
        assert isinstance(r, dict)
        print(
            f"{mode:<11} {r['rps']:8.1f} req/s   p50 {r['p50_ms']:7.2f} ms   "
            f"p99 {r['p99_ms']:7.2f} ms"
        )
    print(f"concurrent/sequential throughput: {result['ratio']:.2f}x (target >= 5x)")
    print(f"mean batch size under concurrency: {result['mean_batch_size']:.1f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
