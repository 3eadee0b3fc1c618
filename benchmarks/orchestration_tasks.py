"""Orchestration throughput: tasks/s from submission to succeeded, and p99 queue latency
(created -> started), for a trivial handler, against procrastinate on PostgreSQL.

Targets, each with 1 and 2 worker processes:

* ``embedded``: ``noa serve`` on the embedded profile (SQLite, ``inprocess`` broker);
* ``pg+nats``: ``noa serve`` on PostgreSQL and NATS JetStream (a database, stream and
  work queue of the run's own, dropped afterwards);
* ``procrastinate``: the peer, with its own database on the same PostgreSQL, installed
  into a temporary folder (``python3 -m uv pip install --target``), never into the venv.

Every target gets the same tasks, the same number of submissions in flight and the same
per-process concurrency. NOA tasks go in over HTTP (``POST /v1/tasks``), procrastinate's
with ``defer_async``, each from one client process. Timings come from each system's own
rows: NOA's ``created_at``/``started_at``/``finished_at``, procrastinate's events.

    .venv/bin/python benchmarks/orchestration_tasks.py                 # about 2 minutes
    .venv/bin/python benchmarks/orchestration_tasks.py --tasks 500 --only embedded
    .venv/bin/python benchmarks/orchestration_tasks.py --json out.json

Needs PostgreSQL (``--postgres``, a role that may create databases) and NATS on
127.0.0.1:4222 for the pg+nats and procrastinate targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
NOA = str(Path(sys.executable).with_name("noa"))
PEER_DIR = Path(tempfile.gettempdir()) / "noa-bench-procrastinate"
TASK_TYPE = "bench_noop"

NOOP_PLUGIN = f"""
from noa.plugin_sdk import hookimpl
from noa.plugin_sdk.tasks import TaskType


async def noop(ctx, job):
    return job["n"]


@hookimpl
def noa_register_task_types(task_types):
    task_types.add({TASK_TYPE!r}, TaskType(noop, timeout_s=30))
"""


# -- figures ------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _figures(t0: float, rows: list[tuple[float, float, float]]) -> dict[str, float]:
    """From (created, started, finished) epoch seconds of every task submitted at t0."""
    end = max(finished for _, _, finished in rows)
    waits = [started - created for created, started, _ in rows]
    return {
        "tasks": len(rows),
        "seconds": end - t0,
        "tasks_per_s": len(rows) / (end - t0),
        "queue_p50_ms": 1000 * _percentile(waits, 0.50),
        "queue_p99_ms": 1000 * _percentile(waits, 0.99),
    }


# -- services -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _with_database(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


@contextlib.contextmanager
def _database(admin_url: str, prefix: str) -> Iterator[str]:
    import asyncpg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f"CREATE DATABASE {name}"))
    try:
        yield _with_database(admin_url, name)
    finally:
        asyncio.run(run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def _drop_stream(stream: str) -> None:
    import nats

    async def drop() -> None:
        nc = await nats.connect("nats://127.0.0.1:4222")
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(stream)
        await nc.close()

    asyncio.run(drop())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# -- NOA ----------------------------------------------------------------------------------


def _plugin_site(root: Path) -> Path:
    """An installed distribution (dist-info with an entry point) contributing the task type."""
    site = root / "site"
    info = site / "noa_bench_noop-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: noa-bench-noop\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[noa.plugins]\nbench_noop = noa_bench_noop\n")
    (site / "noa_bench_noop.py").write_text(NOOP_PLUGIN)
    return site


async def _submit(url: str, bodies: list[dict[str, Any]], in_flight: int) -> None:
    """POST every body to /v1/tasks, ``in_flight`` at a time, over keep-alive connections.
    aiohttp, not httpx: on two cores httpx's client spent more CPU per request than the
    server did, so it, not the server, set the rate."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=in_flight)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as client:
        pending = iter(bodies)

        async def lane() -> None:
            for body in pending:
                async with client.post("/v1/tasks", json=body) as response:
                    if response.status != 201:
                        text = await response.text()
                        raise RuntimeError(f"submit: {response.status} {text[:300]}")

        await asyncio.gather(*(lane() for _ in range(in_flight)))


class _Rows:
    """Reads the task rows of one NOA run (SQLite file or PostgreSQL database)."""

    def __init__(self, sqlite_path: Path | None = None, postgres_url: str | None = None) -> None:
        self.sqlite_path, self.postgres_url = sqlite_path, postgres_url

    async def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if self.sqlite_path is not None:
            uri = f"file:{self.sqlite_path}?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as conn:
                sql = sql.replace("$1", "?")
                return [tuple(r) for r in conn.execute(sql, params).fetchall()]
        import asyncpg

        conn = await asyncpg.connect(self.postgres_url)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *params)]
        finally:
            await conn.close()


async def _run_noa(
    url: str, rows: _Rows, tasks: int, in_flight: int, warmup: int
) -> dict[str, Any]:
    finished = (
        "SELECT COUNT(*) FROM noa_orchestration_task WHERE state = 'succeeded' AND created_at >= $1"
    )
    t_warm = time.time()
    await _submit(url, [{"type": TASK_TYPE, "input": {"n": n}} for n in range(warmup)], in_flight)
    await _until(rows, finished, t_warm, warmup)
    t0 = time.time()
    await _submit(url, [{"type": TASK_TYPE, "input": {"n": n}} for n in range(tasks)], in_flight)
    submitted_s = time.time() - t0
    await _until(rows, finished, t0, tasks)
    found = await rows.query(
        "SELECT created_at, started_at, finished_at FROM noa_orchestration_task "
        "WHERE state = 'succeeded' AND created_at >= $1",
        t0,
    )
    figures = _figures(t0, [(float(a), float(b), float(c)) for a, b, c in found])
    return {**figures, "submit_s": submitted_s}


async def _until(rows: _Rows, sql: str, t0: float, count: int, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while (await rows.query(sql, t0))[0][0] < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"not every task succeeded within {timeout_s} s")
        await asyncio.sleep(0.02)


def _noa_target(
    name: str, workers: int, args: argparse.Namespace, root: Path, site: Path
) -> dict[str, Any]:
    folder = root / f"{name}-{workers}"
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOA_")}
    env.update(
        {
            "PYTHONPATH": str(site),
            "NOA_SERVER__DATA_DIR": str(folder / "data"),
            "NOA_PLUGINS__DISABLE": '["inference"]',
            "NOA_OBSERVABILITY__LOG_LEVEL": "warning",
            "NOA_ORCHESTRATION__CONCURRENCY": str(args.concurrency),
            "NOA_ORCHESTRATION__MAX_QUEUED": str(10 * args.tasks),
        }
    )
    with contextlib.ExitStack() as stack:
        if name == "embedded":
            rows = _Rows(sqlite_path=folder / "data" / "noa.sqlite3")
        else:
            url = stack.enter_context(_database(args.postgres, "noabench"))
            tag = uuid.uuid4().hex[:10]
            stack.callback(_drop_stream, f"NOABENCH_{tag}")
            env.update(
                {
                    "NOA_DRIVERS__STORAGE": "postgres",
                    "NOA_STORAGE__POSTGRES_URL": url,
                    "NOA_STORAGE__MIGRATE_ON_START": "true",
                    "NOA_DRIVERS__BROKER": "nats",
                    "NOA_BROKER__NATS_STREAM": f"NOABENCH_{tag}",
                    "NOA_BROKER__SUBJECT_PREFIX": f"noabench{tag}",
                    "NOA_ORCHESTRATION__QUEUE": f"bench.{tag}",
                }
            )
            rows = _Rows(postgres_url=url)
        port = _free_port()
        log = (folder / "serve.log").open("wb")
        stack.callback(log.close)
        proc = subprocess.Popen(
            [NOA, "serve", "--port", str(port), "--workers", str(workers)],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack.callback(_stop, proc)
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, proc, folder / "serve.log")
        return asyncio.run(_run_noa(base, rows, args.tasks, args.in_flight, args.warmup))


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    import httpx

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"noa serve exited:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(base + "/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"noa serve not ready:\n{log.read_text()[-3000:]}")


# -- procrastinate ------------------------------------------------------------------------


def _procrastinate_app(url: str) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name=TASK_TYPE, queue="bench")
    async def noop(n: int) -> int:
        return n

    return app


def _peer_worker(url: str, concurrency: int) -> None:
    """A procrastinate worker process (runs until SIGTERM)."""
    app = _procrastinate_app(url)

    async def work() -> None:
        async with app.open_async():
            await app.run_worker_async(queues=["bench"], concurrency=concurrency)

    asyncio.run(work())


def _peer_client(url: str, tasks: int, in_flight: int, warmup: int) -> None:
    """Defers the tasks, waits for them, prints the figures as JSON."""
    app = _procrastinate_app(url)
    noop = app.tasks[TASK_TYPE]

    async def defer(count: int) -> None:
        gate = asyncio.Semaphore(in_flight)

        async def one(n: int) -> None:
            async with gate:
                await noop.defer_async(n=n)

        await asyncio.gather(*(one(n) for n in range(count)))

    async def wait(count: int, since: float) -> None:
        connector = app.connector
        while True:
            [row] = await connector.execute_query_all_async(
                "SELECT COUNT(*) AS n FROM procrastinate_events "
                "WHERE type = 'succeeded' AND at >= to_timestamp(%(since)s)",
                since=since,
            )
            if row["n"] >= count:
                return
            await asyncio.sleep(0.02)

    async def run() -> dict[str, Any]:
        async with app.open_async():
            t_warm = time.time()
            await defer(warmup)
            await wait(warmup, t_warm)
            t0 = time.time()
            await defer(tasks)
            submitted_s = time.time() - t0
            await wait(tasks, t0)
            rows = await app.connector.execute_query_all_async(
                "SELECT extract(epoch FROM max(e.at) FILTER (WHERE e.type = 'deferred')) AS c, "
                "extract(epoch FROM max(e.at) FILTER (WHERE e.type = 'started')) AS s, "
                "extract(epoch FROM max(e.at) FILTER (WHERE e.type = 'succeeded')) AS f "
                "FROM procrastinate_events e GROUP BY e.job_id "
                "HAVING min(e.at) >= to_timestamp(%(since)s)",
                since=t0,
            )
            found = [(float(r["c"]), float(r["s"]), float(r["f"])) for r in rows]
            return {**_figures(t0, found), "submit_s": submitted_s}

    print(json.dumps(asyncio.run(run())))


def _peer_target(workers: int, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(PEER_DIR)}
    me = [sys.executable, str(HERE)]
    with _database(args.postgres, "noabench_peer") as url:
        subprocess.run(
            [*me, "--peer-schema", url], env=env, check=True, capture_output=True, text=True
        )
        procs = [
            subprocess.Popen(
                [*me, "--peer-worker", url, "--concurrency", str(args.concurrency)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            for _ in range(workers)
        ]
        try:
            time.sleep(1.5)  # the workers connect and listen
            client = subprocess.run(
                [
                    *me,
                    "--peer-client",
                    url,
                    "--tasks",
                    str(args.tasks),
                    "--in-flight",
                    str(args.in_flight),
                    "--warmup",
                    str(args.warmup),
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            if client.returncode != 0:
                raise RuntimeError(f"procrastinate client failed:\n{client.stderr[-3000:]}")
            result: dict[str, Any] = json.loads(client.stdout.strip().splitlines()[-1])
            return result
        finally:
            for proc in procs:
                _stop(proc)


def _peer_schema(url: str) -> None:
    app = _procrastinate_app(url)

    async def apply() -> None:
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

    asyncio.run(apply())


def _install_peer() -> None:
    if (PEER_DIR / "procrastinate").is_dir():
        return
    subprocess.run(
        [
            "python3",
            "-m",
            "uv",
            "pip",
            "install",
            "--quiet",
            "--python",
            sys.executable,
            "--target",
            str(PEER_DIR),
            "procrastinate",
        ],
        check=True,
    )


# -- the run ------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=32, help="submissions in flight")
    parser.add_argument("--concurrency", type=int, default=16, help="tasks run at once per process")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--workers", default="1,2", help="worker process counts")
    parser.add_argument(
        "--only", choices=("embedded", "pg+nats", "procrastinate"), action="append", default=None
    )
    parser.add_argument("--postgres", default="postgresql://127.0.0.1:5432/test")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--peer-worker", help=argparse.SUPPRESS)
    parser.add_argument("--peer-client", help=argparse.SUPPRESS)
    parser.add_argument("--peer-schema", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_worker:
        _peer_worker(args.peer_worker, args.concurrency)
        return 0
    if args.peer_client:
        _peer_client(args.peer_client, args.tasks, args.in_flight, args.warmup)
        return 0
    if args.peer_schema:
        _peer_schema(args.peer_schema)
        return 0

    targets = args.only or ["embedded", "pg+nats", "procrastinate"]
    counts = [int(w) for w in args.workers.split(",")]
    if "procrastinate" in targets:
        _install_peer()
    print(
        f"{args.tasks} tasks (after {args.warmup} warm-up), {args.in_flight} submissions in "
        f"flight, concurrency {args.concurrency} per process, {os.cpu_count()} CPUs"
    )
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="noa-bench-tasks-") as tmp:
        root = Path(tmp)
        site = _plugin_site(root)
        for workers in counts:
            for target in targets:
                key = f"{target} x{workers}"
                if target == "procrastinate":
                    results[key] = _peer_target(workers, args)
                else:
                    results[key] = _noa_target(target, workers, args, root, site)
                r = results[key]
                print(
                    f"{key:<18} {r['tasks_per_s']:8.0f} tasks/s  ({r['seconds']:.2f} s; "
                    f"submit {r['submit_s']:.2f} s)  queue p50 {r['queue_p50_ms']:8.1f} ms  "
                    f"p99 {r['queue_p99_ms']:8.1f} ms",
                    flush=True,
                )
    ratios = {}
    for workers in counts:
        peer = results.get(f"procrastinate x{workers}")
        for target in ("embedded", "pg+nats"):
            mine = results.get(f"{target} x{workers}")
            if peer and mine:
                ratio = mine["tasks_per_s"] / peer["tasks_per_s"]
                ratios[f"{target} x{workers} / procrastinate x{workers}"] = ratio
                print(f"{target} x{workers} / procrastinate x{workers}: {ratio:.2f}x tasks/s")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
