"""HTTP overhead of the full NOA server against a bare Litestar app, both on granian.

What it measures, in one run:

* req/s, p50 and p99 latency (wrk, 64 connections, ``--latency``) for ``GET /health``
  and for a ~200-byte validated JSON ``POST /v1/hello/greet`` (the example plugin),
  on (a) ``noa serve --profile embedded`` with every default plugin and middleware and
  the example plugin on PYTHONPATH, and (b) ``benchmarks/bare_app.py`` on the granian
  binary with the settings ``noa serve`` uses (asgi, factory, 127.0.0.1, same workers,
  default runtime mode, access log off); at 1 and 2 workers, both servers up side by
  side and their runs alternating for ``--rounds`` rounds (median reported); the ratio
  full/bare;
* the time from spawning ``noa serve`` until ``GET /ready`` first answers 200 (median
  of 3 starts), and the time from SIGTERM until it exits, with its exit code.

Run it from the repository root (installs wrk with apt-get if it is missing)::

    .venv/bin/python benchmarks/http_overhead.py            # full run (~3 min)
    .venv/bin/python benchmarks/http_overhead.py --quick    # smoke run (~30 s)
    .venv/bin/python benchmarks/http_overhead.py --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
POST_LUA = HERE / "post.lua"
GREET = "/v1/hello/greet"
SCENARIOS = {"GET /health": ("/health", None), f"POST {GREET}": (GREET, POST_LUA)}
UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class WrkResult:
    scenario: str
    target: str
    workers: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int

    @property
    def flagged(self) -> bool:
        return self.non_2xx > 0 or self.socket_errors > 0 or self.requests == 0


# --- processes ------------------------------------------------------------------------

Proc = subprocess.Popen[bytes]
_procs: list[Proc] = []  # every server started and not yet stopped


def spawn(cmd: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> Proc:
    """Start a server in its own session, so cleanup can stop its whole process group."""
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    _procs.append(proc)
    return proc


def stop(proc: Proc, grace: float = 15.0) -> int:
    """SIGTERM the process group we started, SIGKILL it after ``grace`` seconds."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            log(f"  pid {proc.pid} ignored SIGTERM for {grace}s: SIGKILL")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            proc.wait()
    if proc in _procs:
        _procs.remove(proc)
    return proc.returncode


def stop_all() -> None:
    for proc in list(_procs):
        stop(proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return True
        return False


def wait_port_free(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while port_in_use(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} still in use after {timeout}s")
        time.sleep(0.05)


def http(
    method: str, url: str, body: bytes | None = None, timeout: float = 2.0
) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url, data=body, method=method, headers={"Content-Type": "application/json"} if body else {}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ok(proc: Proc, url: str, timeout: float = 60.0, every: float = 0.02) -> float:
    """Poll ``url`` every ``every`` s until it answers 200; the seconds that took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}) before {url} answered 200")
        try:
            if http("GET", url, timeout=1.0)[0] == 200:
                return time.monotonic() - start
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(every)
    raise RuntimeError(f"{url} did not answer 200 within {timeout}s")


# --- servers --------------------------------------------------------------------------


def install_plugin(target: Path) -> None:
    cmd = [
        "uv",
        "pip",
        "install",
        "--python",
        sys.executable,
        "--no-deps",
        "--target",
        str(target),
        str(ROOT / "examples" / "noa-plugin-hello"),
    ]
    log(f"installing the example plugin: {' '.join(cmd)}")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOA_", "GRANIAN_"))}
    env.pop("PYTHONPATH", None)
    return {**env, **extra}


def server_cmd(target: str, port: int, workers: int) -> list[str]:
    if target == "full":
        return [
            str(BIN / "noa"),
            "serve",
            "--profile",
            "embedded",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            str(workers),
        ]
    # Mirrors Granian(...) in kernel/src/noa/kernel/cli/_main.py `serve`; the kill
    # timeout is ceil(server.shutdown_grace_s), 10 on the embedded profile.
    return [
        str(BIN / "granian"),
        "--interface",
        "asgi",
        "--factory",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--workers-kill-timeout",
        "10",
        "bare_app:create_app",
    ]


class Servers:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.plugin_dir = work / "site"
        install_plugin(self.plugin_dir)
        self.envs = {
            "full": clean_env(PYTHONPATH=str(self.plugin_dir)),
            "bare": clean_env(PYTHONPATH=str(HERE)),
        }

    def start(self, target: str, workers: int) -> tuple[Proc, int, float]:
        port = free_port()
        cmd = server_cmd(target, port, workers)
        proc = spawn(cmd, self.envs[target], self.work, self.work / f"{target}-{workers}w.log")
        probe = "/ready" if target == "full" else "/health"
        took = wait_ok(proc, f"http://{HOST}:{port}{probe}")
        return proc, port, took


def check_responses(port: int, target: str) -> dict[str, Any]:
    """One request per scenario: status and body, to compare full and bare."""
    status, body = http("GET", f"http://{HOST}:{port}/health")
    health = json.loads(body)
    health_keys = sorted(health) if status == 200 else None
    payload = re.search(r"wrk\.body = '(.*)'", POST_LUA.read_text())
    assert payload is not None, "post.lua has no wrk.body"
    pstatus, pbody = http("POST", f"http://{HOST}:{port}{GREET}", payload.group(1).encode())
    log(f"  {target}: GET /health -> {status}, POST {GREET} -> {pstatus} {pbody.decode()[:90]}")
    return {"health": (status, health_keys), "post": (pstatus, json.loads(pbody))}


# --- wrk ------------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        log(f"wrk found at {found}")
        return found
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "update"], ["apt-get", "install", "-y", "wrk"]):
        log(f"wrk not on PATH: running {' '.join(prefix + args)}")
        subprocess.run(prefix + args, check=True, env=env, stdout=subprocess.DEVNULL)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("apt-get install wrk did not put wrk on PATH")
    return found


def to_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unparsable wrk duration {text!r}")
    return float(m.group(1)) * UNITS_MS[m.group(2)]


def run_wrk(
    wrk: str, url: str, script: Path | None, seconds: float, threads: int, connections: int
) -> str:
    cmd = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "5s",
    ]
    if script:
        cmd += ["-s", str(script)]
    done = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def parse_wrk(out: str, scenario: str, target: str, workers: int) -> WrkResult:
    def grab(pattern: str, default: str | None = None) -> str:
        m = re.search(pattern, out)
        if m is None and default is None:
            raise ValueError(f"no {pattern!r} in wrk output:\n{out}")
        return m.group(1) if m else str(default)

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        scenario=scenario,
        target=target,
        workers=workers,
        rps=float(grab(r"Requests/sec:\s+([\d.]+)")),
        p50_ms=to_ms(grab(r"\s50%\s+(\S+)")),
        p99_ms=to_ms(grab(r"\s99%\s+(\S+)")),
        requests=int(grab(r"(\d+) requests in")),
        non_2xx=int(grab(r"Non-2xx or 3xx responses:\s+(\d+)", "0")),
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
    )


# --- phases ---------------------------------------------------------------------------


def load_phase(
    args: argparse.Namespace, wrk: str, servers: Servers
) -> tuple[list[WrkResult], list[str]]:
    """Both servers run side by side; their wrk runs alternate (full, bare, full, bare ...)
    so that a slow patch of a shared machine hits both alike. Each reported row is the
    median run of ``--rounds``."""
    results: list[WrkResult] = []
    notes: list[str] = []
    for workers in args.workers:
        seen: dict[str, dict[str, Any]] = {}
        running: dict[str, tuple[Proc, int]] = {}
        try:
            for target in ("full", "bare"):
                log(f"starting {target} server, {workers} worker(s)")
                proc, port, took = servers.start(target, workers)
                running[target] = (proc, port)
                log(f"  ready on port {port} after {took:.2f}s")
                seen[target] = check_responses(port, target)
            for scenario, (path, script) in SCENARIOS.items():
                urls = {t: f"http://{HOST}:{port}{path}" for t, (_, port) in running.items()}
                runs: dict[str, list[WrkResult]] = {t: [] for t in running}
                for target, url in urls.items():
                    log(f"  {target} {workers}w {scenario}: warm-up {args.warmup:g}s")
                    run_wrk(wrk, url, script, args.warmup, args.threads, args.connections)
                for round_no in range(1, args.rounds + 1):
                    for target, url in urls.items():
                        out = run_wrk(
                            wrk, url, script, args.duration, args.threads, args.connections
                        )
                        res = parse_wrk(out, scenario, target, workers)
                        runs[target].append(res)
                        log(
                            f"  {target} {workers}w {scenario} round {round_no}: "
                            f"{res.rps:,.0f} req/s  p50 {res.p50_ms:.2f} ms  "
                            f"p99 {res.p99_ms:.2f} ms  non-2xx {res.non_2xx}  "
                            f"socket errors {res.socket_errors}"
                        )
                for target in running:
                    ordered = sorted(runs[target], key=lambda r: r.rps)
                    bad = [r for r in ordered if r.flagged]
                    # A flagged round is reported instead of the median so the flag shows.
                    results.append(bad[0] if bad else ordered[len(ordered) // 2])
        finally:
            for target, (proc, port) in running.items():
                code = stop(proc)
                wait_port_free(port)
                log(f"  {target} server stopped (exit {code})")
        full_post, bare_post = seen["full"]["post"], seen["bare"]["post"]
        if full_post != bare_post or seen["full"]["health"] != seen["bare"]["health"]:
            notes.append(f"{workers}w: responses differ: {seen}")
    return results, notes


def lifecycle_phase(servers: Servers, starts: int) -> dict[str, Any]:
    """Spawn-to-ready and SIGTERM-to-exit of ``noa serve`` (1 worker), ``starts`` times."""
    ready_s: list[float] = []
    exits: list[tuple[float, int]] = []
    for i in range(1, starts + 1):
        log(f"lifecycle: start {i}/{starts} of noa serve (poll /ready every 20 ms)")
        proc, port, took = servers.start("full", 1)
        ready_s.append(took)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # the noa serve process itself, as an orchestrator would
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            code = -999
        exits.append((time.monotonic() - t0, code))
        stop(proc)  # reaps, or kills a group left behind
        wait_port_free(port)
        log(
            f"  ready after {took * 1000:.0f} ms; "
            f"SIGTERM -> exit {code} after {exits[-1][0] * 1000:.0f} ms"
        )
    down = [e[0] for e in exits]
    return {
        "ready_s": ready_s,
        "ready_median_s": statistics.median(ready_s),
        "shutdown_s": down,
        "shutdown_median_s": statistics.median(down),
        "exit_codes": [e[1] for e in exits],
    }


def report(results: list[WrkResult], life: dict[str, Any], notes: list[str]) -> None:
    print()
    head = (
        f"{'workers':>7}  {'scenario':<22} {'target':<6} {'req/s':>10} {'p50 ms':>8} "
        f"{'p99 ms':>8}  {'non-2xx':>7}  flag"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        flag = "NON-2XX/ERRORS" if r.flagged else ""
        print(
            f"{r.workers:>7}  {r.scenario:<22} {r.target:<6} {r.rps:>10,.0f} {r.p50_ms:>8.2f} "
            f"{r.p99_ms:>8.2f}  {r.non_2xx:>7}  {flag}".rstrip()
        )
    print("\nratio full/bare (req/s)  target: >= 0.80 on the validated POST")
    for ratio in ratios(results):
        mark = "" if ratio["ratio"] >= 0.8 else "  (below 0.80)"
        print(f"  {ratio['workers']} worker(s)  {ratio['scenario']:<22} {ratio['ratio']:.2f}{mark}")
    print(
        f"\nnoa serve spawn -> GET /ready 200: median {life['ready_median_s'] * 1000:.0f} ms "
        f"of {', '.join(f'{s * 1000:.0f}' for s in life['ready_s'])} ms"
    )
    print(
        f"noa serve SIGTERM -> exit: median {life['shutdown_median_s'] * 1000:.0f} ms "
        f"of {', '.join(f'{s * 1000:.0f}' for s in life['shutdown_s'])} ms; "
        f"exit codes {life['exit_codes']}"
    )
    for note in notes + [
        f"FLAGGED: {r.target} {r.workers}w {r.scenario}: {r.non_2xx} non-2xx, "
        f"{r.socket_errors} socket errors"
        for r in results
        if r.flagged
    ]:
        print(f"NOTE: {note}")


def ratios(results: list[WrkResult]) -> list[dict[str, Any]]:
    by = {(r.workers, r.scenario, r.target): r for r in results}
    return [
        {"workers": w, "scenario": s, "ratio": by[(w, s, "full")].rps / by[(w, s, "bare")].rps}
        for (w, s, t) in by
        if t == "full" and (w, s, "bare") in by and by[(w, s, "bare")].rps
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="smoke run: 1 s runs, 1 worker, 1 start")
    add("--warmup", type=float, default=3.0, help="warm-up seconds per run (default 3)")
    add("--duration", type=float, default=5.0, help="measured seconds per run (default 5)")
    add(
        "--rounds", type=int, default=3, help="alternating runs per server and scenario (default 3)"
    )
    add("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default 1 2)")
    add("--connections", type=int, default=64, help="wrk connections (default 64)")
    add("--threads", type=int, default=1, help="wrk threads (default 1)")
    add("--starts", type=int, default=3, help="starts for the ready/stop timings (default 3)")
    add("--json", type=Path, help="also write the results as JSON to this path")
    args = parser.parse_args()
    if args.quick:
        args.warmup, args.duration, args.workers, args.starts, args.rounds = 1.0, 1.0, [1], 1, 1

    # SIGTERM to this script unwinds like Ctrl-C, through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="noa-bench-"))
    code = 1
    try:
        log(f"phase: setup (work dir {work})")
        wrk = ensure_wrk()
        servers = Servers(work)
        log(
            f"phase: load ({args.warmup:g}s warm-up + {args.duration:g}s per run, "
            f"{args.connections} connections, wrk -t{args.threads}, workers {args.workers})"
        )
        results, notes = load_phase(args, wrk, servers)
        log("phase: lifecycle (start-to-ready, SIGTERM-to-exit)")
        life = lifecycle_phase(servers, args.starts)
        report(results, life, notes)
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "settings": {
                            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                        },
                        "results": [asdict(r) | {"flagged": r.flagged} for r in results],
                        "ratios": ratios(results),
                        "lifecycle": life,
                        "notes": notes,
                    },
                    indent=2,
                )
            )
            log(f"wrote {args.json}")
        code = 1 if any(r.flagged for r in results) or notes else 0
    except KeyboardInterrupt:
        log("interrupted")
        code = 130
    finally:
        stop_all()
        if code == 0:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"server logs kept in {work}")
    return code


if __name__ == "__main__":
    sys.exit(main())
