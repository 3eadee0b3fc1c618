"""Does dynamic batching pay? Single-sentence ``/v1/embed`` requests over real HTTP.

Starts ``noa serve --profile embedded`` (the default model must be in ``.noa/models``:
``./scripts/setup`` puts it there), then in one run and on one server:

* **sequential**: wrk with 1 connection posting one short sentence, one request at a time;
* **concurrent**: the same request from 64 connections.

wrk (C, from Debian's packages; installed like ``http_overhead.py`` does when missing)
is the client: a Python client on the same two cores would be the bottleneck. Reports
requests/s, p50 and p99 of each (median of the rounds, which alternate the two modes),
the concurrent/sequential throughput ratio (the issue's target: >= 5x), and the mean
batch size the server computed (from ``inference_batch_size`` in ``/metrics``).

    .venv/bin/python benchmarks/inference_http.py [--seconds 10] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
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
from typing import Any

import httpx
from http_overhead import WrkResult, ensure_wrk, parse_wrk, run_wrk

ROOT = Path(__file__).resolve().parents[1]
NOA = str(ROOT / ".venv" / "bin" / "noa")
# One short sentence (16 tokens); wrk sends it over and over.
SENTENCE = "Request 7: river mountain quiet engine lantern harbor violet copper."


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


def batch_stats(url: str) -> tuple[float, float]:
    text = httpx.get(url + "/metrics", timeout=5).text
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("inference_batch_size_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("inference_batch_size_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


def measure(url: str, seconds: float, rounds: int, script: Path) -> dict[str, Any]:
    wrk = ensure_wrk()
    endpoint = url + "/v1/embed"
    run_wrk(wrk, endpoint, script, 3, 1, 64)  # warm up
    results: dict[str, list[WrkResult]] = {"sequential": [], "concurrent": []}
    batches: list[float] = []
    for _ in range(rounds):
        for mode, connections in (("sequential", 1), ("concurrent", 64)):
            before = batch_stats(url)
            out = run_wrk(wrk, endpoint, script, seconds, 1, connections)
            after = batch_stats(url)
            result = parse_wrk(out, mode, "noa", 1)
            if result.non_2xx or result.socket_errors:
                sys.exit(f"{mode}: {result.non_2xx} non-2xx, {result.socket_errors} socket errors")
            results[mode].append(result)
            if mode == "concurrent":
                batches.append((after[0] - before[0]) / max(after[1] - before[1], 1))
    median = {
        mode: {
            "rps": statistics.median(r.rps for r in rows),
            "p50_ms": statistics.median(r.p50_ms for r in rows),
            "p99_ms": statistics.median(r.p99_ms for r in rows),
        }
        for mode, rows in results.items()
    }
    return {
        **median,
        "ratio": median["concurrent"]["rps"] / median["sequential"]["rps"],
        "mean_batch_size": statistics.median(batches),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="each wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 round")
    parser.add_argument("--json", type=Path, help="write the result here too")
    args = parser.parse_args()
    seconds, rounds = (3.0, 1) if args.quick else (args.seconds, args.rounds)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="noa-bench-") as workdir:
        proc = start_server(Path(workdir), port)
        try:
            wait_ready(url, proc)
            script = Path(workdir) / "embed.lua"
            script.write_text(
                'wrk.method = "POST"\n'
                f"wrk.body = '{json.dumps({'input': SENTENCE})}'\n"
                'wrk.headers["Content-Type"] = "application/json"\n'
            )
            result = measure(url, seconds, rounds, script)
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
