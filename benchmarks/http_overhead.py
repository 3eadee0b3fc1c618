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
* the same for two more ``noa serve`` targets, to price security: ``auth`` (``[auth]
  anonymous = "off"``, every wrk request carrying an HS256 JWT with the ``*`` scope, and
  a ``default`` rate limit that never refuses, its buckets in Redis or memory) against
  ``noauth`` (the auth plugin disabled); the ratio auth/noauth;
* the time from spawning ``noa serve`` until ``GET /ready`` first answers 200 (median
  of 3 starts), and the time from SIGTERM until it exits, with its exit code.

Run it from the repository root (installs wrk with apt-get if it is missing)::

    .venv/bin/python benchmarks/http_overhead.py                # everything (~6 min)
    .venv/bin/python benchmarks/http_overhead.py --quick        # smoke run (~40 s)
    .venv/bin/python benchmarks/http_overhead.py --only auth    # auth/noauth only
    .venv/bin/python benchmarks/http_overhead.py --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
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

import jwt

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
POST_LUA = HERE / "post.lua"
GREET = "/v1/hello/greet"
SCENARIOS = {"GET /health": ("/health", None), f"POST {GREET}": (GREET, POST_LUA)}
UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
# Each comparison: (measured, baseline, req/s target of measured/baseline).
COMPARISONS = {"bare": ("full", "bare", 0.80), "auth": ("auth", "noauth", 0.85)}
REDIS_URL = "redis://127.0.0.1:6379/0"
JWT_ISSUER = JWT_AUDIENCE = "noa-bench"
# A bucket that never runs dry: the limiter decides every request, wrk sees only 2xx.
UNLIMITED = {"per_s": 1e9, "burst": 1_000_000_000}


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
    method: str,
    url: str,
    body: bytes | None = None,
    timeout: float = 2.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, dict[str, str]]:
    """Status, body and headers (names lower-cased) of one request; 4xx/5xx included."""
    sent = {"Content-Type": "application/json"} if body else {}
    req = urllib.request.Request(url, data=body, method=method, headers=sent | (headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), {k.lower(): v for k, v in exc.headers.items()}


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
    if target != "bare":  # full, noauth and auth are all noa serve
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


def auth_toml(store: str, redis_prefix: str) -> str:
    """The ``--config`` file of the ``auth`` target. ``drivers.cache`` stays the embedded
    profile's ``memory``, as on ``noauth``: with ``rate_limit_store = "redis"`` only the
    limiter talks to Redis, so the two targets differ by the auth plugin alone."""
    limit = ", ".join(f"{k} = {v!r}" for k, v in UNLIMITED.items())
    return f"""\
[auth]
anonymous = "off"
jwt_keys = [{{algorithms = ["HS256"], secret = {{env = "BENCH_JWT_SECRET"}}}}]
jwt_issuer = "{JWT_ISSUER}"
jwt_audience = "{JWT_AUDIENCE}"
rate_limits = {{default = {{{limit}}}}}
rate_limit_store = "{store}"

[cache]
redis_url = "{REDIS_URL}"
redis_prefix = "{redis_prefix}"
"""


def require_redis() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2.0).ping()
    except redis.RedisError as exc:
        raise RuntimeError(
            f"--auth-store redis: Redis at {REDIS_URL} does not answer ({exc}); "
            "start it, or pass --auth-store memory"
        ) from exc


def redis_keys(prefix: str) -> int:
    """Keys under ``prefix``. The limiter's buckets expire by themselves about a second
    after their last hit (a full bucket needs no state), so nothing is left to clean."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2.0)
    return sum(1 for _ in client.scan_iter(match=f"{prefix}*", count=1000))


class Servers:
    def __init__(self, work: Path, auth_store: str) -> None:
        self.work = work
        self.plugin_dir = work / "site"
        install_plugin(self.plugin_dir)
        self.auth_store = auth_store
        # Unique per run: other users of this Redis keep their buckets, and ours are ours.
        self.redis_prefix = f"noa-bench-{secrets.token_hex(4)}:"
        self.auth_config = work / "auth.toml"
        self.auth_config.write_text(auth_toml(auth_store, self.redis_prefix))
        secret = secrets.token_urlsafe(32)
        now = int(time.time())
        claims = {"iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "sub": "bench", "scope": "*"}
        token = jwt.encode(claims | {"iat": now, "exp": now + 6 * 3600}, secret, "HS256")
        full = clean_env(PYTHONPATH=str(self.plugin_dir))
        self.envs = {
            "full": full,
            "bare": clean_env(PYTHONPATH=str(HERE)),
            "noauth": full | {"NOA_PLUGINS__DISABLE": '["auth"]'},
            "auth": full | {"BENCH_JWT_SECRET": secret},
        }
        # What each target's requests carry (checks and wrk alike).
        self.headers = {"auth": {"Authorization": f"Bearer {token}"}}

    def start(self, target: str, workers: int) -> tuple[Proc, int, float]:
        port = free_port()
        cmd = server_cmd(target, port, workers)
        if target == "auth":
            cmd += ["--config", str(self.auth_config)]
        proc = spawn(cmd, self.envs[target], self.work, self.work / f"{target}-{workers}w.log")
        probe = "/health" if target == "bare" else "/ready"
        took = wait_ok(proc, f"http://{HOST}:{port}{probe}")
        return proc, port, took

    def limiter_problems(self) -> list[str]:
        """After a request to ``auth``: its limiter wrote to Redis (it falls back to
        memory, silently but for a log line, when Redis fails)."""
        if self.auth_store != "redis":
            return []
        found = redis_keys(self.redis_prefix)
        log(f"  auth: {found} rate-limit key(s) under {self.redis_prefix!r} in Redis")
        return [] if found else [f"auth: no rate-limit keys under {self.redis_prefix!r} in Redis"]


def check_responses(
    port: int, target: str, headers: dict[str, str]
) -> tuple[dict[str, Any], list[str]]:
    """One request per scenario with the target's credentials: status and body, to
    compare a target with its baseline. With credentials, also the proof that auth and
    the limiter are on: 401 without them, and RateLimit headers with them."""
    base = f"http://{HOST}:{port}"
    status, body, _ = http("GET", f"{base}/health", headers=headers)
    health = json.loads(body)
    health_keys = sorted(health) if status == 200 else None
    payload = re.search(r"wrk\.body = '(.*)'", POST_LUA.read_text())
    assert payload is not None, "post.lua has no wrk.body"
    data = payload.group(1).encode()
    pstatus, pbody, pheaders = http("POST", f"{base}{GREET}", data, headers=headers)
    log(f"  {target}: GET /health -> {status}, POST {GREET} -> {pstatus} {pbody.decode()[:90]}")
    problems: list[str] = []
    if headers:
        anonymous = http("POST", f"{base}{GREET}", data)[0]
        limit = pheaders.get("ratelimit-limit")
        log(f"  {target}: POST without the token -> {anonymous}; RateLimit-Limit: {limit}")
        if not 200 <= pstatus < 300:
            problems.append(f"{target}: POST {GREET} with the token answered {pstatus}")
        if anonymous != 401:
            problems.append(f"{target}: POST {GREET} without a token answered {anonymous}, not 401")
        if limit is None:
            problems.append(f"{target}: POST {GREET} sent no RateLimit-Limit: no limiter ran")
    return {"health": (status, health_keys), "post": (pstatus, json.loads(pbody))}, problems


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
    wrk: str,
    url: str,
    script: Path | None,
    seconds: float,
    threads: int,
    connections: int,
    headers: dict[str, str],
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
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]  # wrk adds them to the script's too
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


Runs = dict[tuple[int, str, str], list[WrkResult]]  # (workers, scenario, target): rounds


def load_phase(
    args: argparse.Namespace, wrk: str, servers: Servers, targets: list[str]
) -> tuple[list[WrkResult], Runs, list[str]]:
    """The targets run side by side; their wrk runs alternate (full, bare, noauth, auth,
    full ...) so that a slow patch of a shared machine hits all alike. Each reported row
    is the median run of ``--rounds``; every round is kept for the per-round ratios."""
    results: list[WrkResult] = []
    every: Runs = {}
    notes: list[str] = []
    for workers in args.workers:
        seen: dict[str, dict[str, Any]] = {}
        running: dict[str, tuple[Proc, int]] = {}
        try:
            for target in targets:
                log(f"starting {target} server, {workers} worker(s)")
                proc, port, took = servers.start(target, workers)
                running[target] = (proc, port)
                log(f"  ready on port {port} after {took:.2f}s")
                headers = servers.headers.get(target, {})
                seen[target], problems = check_responses(port, target, headers)
                if target == "auth":
                    problems += servers.limiter_problems()
                notes += [f"{workers}w: {problem}" for problem in problems]
            for measured, baseline, _ in COMPARISONS.values():
                if measured in seen and baseline in seen and seen[measured] != seen[baseline]:
                    pair = {t: seen[t] for t in (measured, baseline)}
                    notes.append(f"{workers}w: responses differ: {pair}")
            for scenario, (path, script) in SCENARIOS.items():
                urls = {t: f"http://{HOST}:{port}{path}" for t, (_, port) in running.items()}
                runs: dict[str, list[WrkResult]] = {t: [] for t in running}
                for target, url in urls.items():
                    log(f"  {target} {workers}w {scenario}: warm-up {args.warmup:g}s")
                    headers = servers.headers.get(target, {})
                    run_wrk(wrk, url, script, args.warmup, args.threads, args.connections, headers)
                for round_no in range(1, args.rounds + 1):
                    for target, url in urls.items():
                        out = run_wrk(
                            wrk,
                            url,
                            script,
                            args.duration,
                            args.threads,
                            args.connections,
                            servers.headers.get(target, {}),
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
                    every[(workers, scenario, target)] = runs[target]
                    ordered = sorted(runs[target], key=lambda r: r.rps)
                    bad = [r for r in ordered if r.flagged]
                    # A flagged round is reported instead of the median so the flag shows.
                    results.append(bad[0] if bad else ordered[len(ordered) // 2])
        finally:
            for target, (proc, port) in running.items():
                code = stop(proc)
                wait_port_free(port)
                log(f"  {target} server stopped (exit {code})")
    return results, every, notes


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


def report(
    results: list[WrkResult],
    every: Runs,
    life: dict[str, Any] | None,
    notes: list[str],
    auth_store: str,
) -> None:
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
    about = {
        "bare": "target: >= 0.80 on the validated POST",
        "auth": f"target: >= 0.85; JWT HS256 + rate limit in {auth_store} "
        "(GET /health is public: no credential check, no limiter)",
    }
    for name, (measured, baseline, target) in COMPARISONS.items():
        found = ratios(results, every, name)
        if not found:
            continue
        print(f"\nratio {measured}/{baseline} (req/s)  {about[name]}")
        for ratio in found:
            mark = "" if ratio["ratio"] >= target else f"  (below {target:.2f})"
            p50, p99 = ratio["p50_ms"], ratio["p99_ms"]
            spread = ratio["per_round"]
            print(
                f"  {ratio['workers']} worker(s)  {ratio['scenario']:<22} {ratio['ratio']:.2f}"
                f"  rounds {min(spread):.2f}-{max(spread):.2f}"
                f"  p50 {p50[measured]:.2f}/{p50[baseline]:.2f} ms"
                f"  p99 {p99[measured]:.2f}/{p99[baseline]:.2f} ms{mark}"
            )
    if life is not None:
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


def ratios(results: list[WrkResult], every: Runs, comparison: str) -> list[dict[str, Any]]:
    """measured/baseline req/s of the median rows, each round's ratio (the runs of one
    round ran back to back), and both targets' p50 and p99."""
    measured, baseline, _ = COMPARISONS[comparison]
    by = {(r.workers, r.scenario, r.target): r for r in results}
    found = []
    for (w, s, t), m in by.items():
        b = by.get((w, s, baseline))
        if t != measured or b is None or not b.rps:
            continue
        pairs = zip(every[(w, s, measured)], every[(w, s, baseline)], strict=True)
        found.append(
            {
                "workers": w,
                "scenario": s,
                "ratio": m.rps / b.rps,
                "per_round": [x.rps / y.rps for x, y in pairs if y.rps],
                "rps": {measured: m.rps, baseline: b.rps},
                "p50_ms": {measured: m.p50_ms, baseline: b.p50_ms},
                "p99_ms": {measured: m.p99_ms, baseline: b.p99_ms},
            }
        )
    return found


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
    add(
        "--only",
        choices=sorted(COMPARISONS),
        help="one comparison: bare (full/bare and the start/stop timings) or auth "
        "(auth/noauth); default: both",
    )
    add(
        "--auth-store",
        choices=["redis", "memory"],
        default="redis",
        help=f"where the auth target keeps its rate-limit buckets (default redis, {REDIS_URL})",
    )
    args = parser.parse_args()
    if args.quick:
        args.warmup, args.duration, args.workers, args.starts, args.rounds = 1.0, 1.0, [1], 1, 1

    # SIGTERM to this script unwinds like Ctrl-C, through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="noa-bench-"))
    code = 1
    try:
        log(f"phase: setup (work dir {work})")
        comparisons = [args.only] if args.only else list(COMPARISONS)
        targets = [t for name in comparisons for t in COMPARISONS[name][:2]]
        targets.sort(key=["full", "bare", "noauth", "auth"].index)
        wrk = ensure_wrk()
        if "auth" in targets and args.auth_store == "redis":
            require_redis()
        servers = Servers(work, args.auth_store)
        log(
            f"phase: load ({args.warmup:g}s warm-up + {args.duration:g}s per run, "
            f"{args.connections} connections, wrk -t{args.threads}, workers {args.workers}, "
            f"targets {', '.join(targets)})"
        )
        results, every, notes = load_phase(args, wrk, servers, targets)
        life = None
        if "bare" in comparisons:
            log("phase: lifecycle (start-to-ready, SIGTERM-to-exit)")
            life = lifecycle_phase(servers, args.starts)
        report(results, every, life, notes, args.auth_store)
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "settings": {
                            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                        },
                        "results": [asdict(r) | {"flagged": r.flagged} for r in results],
                        "ratios": ratios(results, every, "bare"),
                        "auth_ratios": ratios(results, every, "auth"),
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
