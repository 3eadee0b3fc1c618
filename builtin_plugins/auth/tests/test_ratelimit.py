"""The rate limiter: token buckets and quotas in memory and in Redis, exact across
processes, coalesced into few round trips, failing open to memory and coming back."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from noa.builtin_plugins.auth.ratelimit import Decision, RateLimiter
from noa.plugin_sdk.auth import RateLimit
from redis.asyncio import Redis

HOST, _, PORT = os.environ.get("NOA_TEST_REDIS_ADDR", "127.0.0.1:6379").rpartition(":")
SHARED_URL = f"redis://{HOST or '127.0.0.1'}:{PORT}/0"

Make = Callable[..., Awaitable[RateLimiter]]


def unique_prefix() -> str:
    return f"test:rl:{uuid.uuid4().hex}:"


async def delete_prefix(url: str, prefix: str) -> None:
    client = Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=500)]
        if keys:
            await client.unlink(*keys)
    finally:
        await client.aclose()


@pytest.fixture(
    params=["memory", pytest.param("redis", marks=pytest.mark.redis)],
)
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """``await make(**kwargs)``: a started limiter on the parametrised backend."""
    prefix = unique_prefix()
    made: list[RateLimiter] = []

    async def build(**kwargs: Any) -> RateLimiter:
        url = SHARED_URL if request.param == "redis" else None
        limiter = RateLimiter(redis_url=url, prefix=prefix, timeout_s=5.0, **kwargs)
        await limiter.start()
        made.append(limiter)
        return limiter

    yield build
    for limiter in made:
        await limiter.close()
    if request.param == "redis":
        await delete_prefix(SHARED_URL, prefix)


def allowed(decisions: list[Decision]) -> int:
    return sum(d.allowed for d in decisions)


def backend(limiter: RateLimiter) -> str:
    # A call, not the property: mypy would keep a narrowed value across awaits.
    return limiter.backend


# -- the algorithm, on either backend ----------------------------------------------------


async def test_burst_then_refusal_then_refill(make: Make) -> None:
    limiter = await make()
    limit = RateLimit(per_s=20, burst=5)
    decisions = await asyncio.gather(*(limiter.hit("client", limit) for _ in range(20)))
    assert backend(limiter) == ("memory" if limiter._client is None else "redis")
    assert allowed(decisions) == 5
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    first = decisions[0]
    assert (first.allowed, first.limit, first.remaining, first.retry_after_s, first.reason) == (
        True,
        5,
        4,
        0.0,
        "",
    )
    assert first.reset_s == pytest.approx(0.05, abs=0.01)
    refused = decisions[-1]
    assert not refused.allowed and refused.reason == "rate"
    assert refused.limit == 5 and refused.remaining == 0
    assert 0 < refused.retry_after_s <= 0.05
    assert refused.reset_s == pytest.approx(0.25, abs=0.05)

    await asyncio.sleep(refused.retry_after_s + 0.01)
    again = await limiter.hit("client", limit)
    assert again.allowed
    # Another key has its own bucket.
    assert (await limiter.hit("other", limit)).remaining == 4


async def test_cost_takes_several_tokens_and_must_fit_the_burst(make: Make) -> None:
    limiter = await make()
    limit = RateLimit(per_s=0.001, burst=5)
    first = await limiter.hit("k", limit, cost=3)
    assert first.allowed and first.remaining == 2
    second = await limiter.hit("k", limit, cost=3)
    assert not second.allowed and second.reason == "rate"
    assert second.retry_after_s == pytest.approx(1 / 0.001, rel=0.01)
    # The refused call took nothing.
    assert (await limiter.hit("k", limit, cost=2)).allowed
    for cost in (0, 6):
        with pytest.raises(ValueError, match="cost <= burst"):
            await limiter.hit("k", limit, cost=cost)
    with pytest.raises(ValueError, match="per_s > 0"):
        await limiter.hit("k", RateLimit(per_s=0, burst=5))


async def test_daily_quota(make: Make) -> None:
    limiter = await make()
    generous = RateLimit(per_s=0.001, burst=1000)
    decisions = [await limiter.hit("key", generous, quota_per_day=3) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    over = decisions[3]
    assert over.reason == "quota" and over.limit == 1000
    # Until the next UTC midnight.
    assert 0 < over.retry_after_s <= 86_400
    # A call refused for its quota takes no token; the same key without quota passes.
    assert over.remaining == decisions[2].remaining
    assert (await limiter.hit("key", generous)).allowed


async def test_a_call_refused_by_rate_does_not_count_against_the_quota(make: Make) -> None:
    limiter = await make()
    limit = RateLimit(per_s=20, burst=1)
    assert (await limiter.hit("key", limit, quota_per_day=2)).allowed
    assert (await limiter.hit("key", limit, quota_per_day=2)).reason == "rate"
    await asyncio.sleep(0.06)
    assert (await limiter.hit("key", limit, quota_per_day=2)).allowed
    await asyncio.sleep(0.06)
    assert (await limiter.hit("key", limit, quota_per_day=2)).reason == "quota"


# -- memory --------------------------------------------------------------------------------


async def test_memory_buckets_refill_with_the_clock() -> None:
    now = [0.0]
    limiter = RateLimiter(redis_url=None, clock=lambda: now[0])
    await limiter.start()
    limit = RateLimit(per_s=20, burst=5)
    assert allowed([await limiter.hit("k", limit) for _ in range(20)]) == 5
    refused = await limiter.hit("k", limit)
    assert refused == Decision(False, 5, 0, 0.25, 0.05, "rate")
    now[0] += 0.05
    assert (await limiter.hit("k", limit)).allowed
    assert not (await limiter.hit("k", limit)).allowed
    now[0] += 10  # refilled, never above the burst
    assert [(await limiter.hit("k", limit)).remaining for _ in range(5)] == [4, 3, 2, 1, 0]
    await limiter.close()
    await limiter.close()


async def test_memory_table_is_bounded_least_recently_used_first() -> None:
    now = [0.0]
    limiter = RateLimiter(redis_url=None, clock=lambda: now[0], memory_keys=100)
    limit = RateLimit(per_s=0.001, burst=1)
    assert (await limiter.hit("victim", limit)).allowed
    assert (await limiter.hit("kept", limit)).allowed
    assert not (await limiter.hit("victim", limit)).allowed
    for i in range(10_000):
        if i % 50 == 0:
            # Used recently, so never the least recently used.
            assert not (await limiter.hit("kept", limit)).allowed
        await limiter.hit(f"ip-{i}", limit)
        assert len(limiter._memory) <= 100
    assert len(limiter._memory) == 100
    # The flood pushed the idle bucket out (it starts full again); not the busy one.
    assert (await limiter.hit("victim", limit)).allowed
    assert not (await limiter.hit("kept", limit)).allowed


class Recorded:
    """A metrics registry holding one counter, recording what it counts."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, ...], float] = {}
        self._labels: tuple[str, ...] = ()

    def counter(self, name: str, documentation: str, labelnames: Any = ()) -> Recorded:
        assert name == "auth_rate_limited_total" and tuple(labelnames) == ("reason",)
        return self

    def gauge(self, name: str, documentation: str, labelnames: Any = ()) -> Recorded:
        raise AssertionError(f"unexpected gauge {name}")

    def histogram(
        self, name: str, documentation: str, labelnames: Any = (), buckets: Any = None
    ) -> Recorded:
        raise AssertionError(f"unexpected histogram {name}")

    def set(self, value: float) -> None:
        raise AssertionError("unexpected gauge")

    def observe(self, amount: float) -> None:
        raise AssertionError("unexpected histogram")

    def labels(self, *values: str) -> Recorded:
        child = Recorded()
        child.counts = self.counts
        child._labels = values
        return child

    def inc(self, amount: float = 1.0) -> None:
        self.counts[self._labels] = self.counts.get(self._labels, 0) + amount


async def test_refusals_are_counted_by_reason() -> None:
    metrics = Recorded()
    limiter = RateLimiter(redis_url=None, metrics=metrics)
    limit = RateLimit(per_s=0.001, burst=2)
    for _ in range(4):
        await limiter.hit("a", limit)
    for _ in range(3):
        await limiter.hit("b", RateLimit(per_s=100, burst=100), quota_per_day=1)
    assert metrics.counts == {("rate",): 2, ("quota",): 2}


# -- Redis -----------------------------------------------------------------------------------


@pytest.mark.redis
async def test_concurrent_calls_share_one_round_trip_and_idle_keys_expire() -> None:
    prefix = unique_prefix()
    limiter = RateLimiter(redis_url=SHARED_URL, prefix=prefix, timeout_s=5.0)
    direct = Redis.from_url(SHARED_URL)
    try:
        await limiter.start()
        limit = RateLimit(per_s=20, burst=50)
        decisions = await asyncio.gather(*(limiter.hit("k", limit) for _ in range(80)))
        assert allowed(decisions) == 50
        # Evaluated in order inside the one script call.
        assert [d.remaining for d in decisions[:50]] == list(range(49, -1, -1))
        assert limiter.round_trips == 1
        # The bucket vanishes about when it would be full again (50 tokens / 20 per s).
        ttl_ms = await direct.pttl(prefix + "b:k")
        assert 1000 < ttl_ms <= 2500 + 1000
        assert (await limiter.hit("q", limit, quota_per_day=10)).allowed
        quota_keys = [key async for key in direct.scan_iter(match=prefix + "b:q:q:*")]
        assert len(quota_keys) == 1
        assert 0 < await direct.ttl(quota_keys[0]) <= 86_400 + 60
    finally:
        await direct.aclose()
        await limiter.close()
        await delete_prefix(SHARED_URL, prefix)


WORKER = textwrap.dedent(
    """
    import asyncio, json, sys
    from noa.builtin_plugins.auth.ratelimit import RateLimiter
    from noa.plugin_sdk.auth import RateLimit

    async def main() -> None:
        limiter = RateLimiter(redis_url=sys.argv[1], prefix=sys.argv[2], timeout_s=10.0)
        await limiter.start()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        limit = RateLimit(per_s=0.001, burst=100)
        decisions = await asyncio.gather(*(limiter.hit("shared", limit) for _ in range(200)))
        print(json.dumps({
            "allowed": sum(d.allowed for d in decisions),
            "backend": limiter.backend,
            "round_trips": limiter.round_trips,
        }), flush=True)
        await limiter.close()

    asyncio.run(main())
    """
)


@pytest.mark.redis
def test_exact_across_processes_with_few_round_trips(tmp_path: Path) -> None:
    prefix = unique_prefix()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), SHARED_URL, prefix],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n", (
                proc.stderr.read() if proc.stderr else ""
            )
        # Both fire at once, on the same key.
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            results.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        asyncio.run(delete_prefix(SHARED_URL, prefix))
    assert [r["backend"] for r in results] == ["redis", "redis"]
    assert sum(r["allowed"] for r in results) == 100
    # 400 calls, coalesced: one script call per batch, not one per call.
    assert sum(r["round_trips"] for r in results) <= 4


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "noa.auth" and r.levelno == logging.WARNING
    ]


async def test_unreachable_redis_at_start_falls_back_to_memory(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    limiter = RateLimiter(redis_url=url, timeout_s=1.0, retry_s=60)
    await limiter.start()  # no error
    limit = RateLimit(per_s=0.001, burst=3)
    decisions = await asyncio.gather(*(limiter.hit("k", limit) for _ in range(10)))
    assert backend(limiter) == "memory"
    assert allowed(decisions) == 3
    assert limiter.round_trips == 0  # not tried again before retry_s
    [warning] = warnings_of(caplog)
    assert "rate limit store Redis failed" in warning and "memory" in warning
    await limiter.close()


class Proxy:
    """A TCP proxy to Redis that can stop answering (stall) or go away (close)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.stalled = False
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, gated: bool) -> None:
            try:
                while data := await src.read(65536):
                    if not (gated and self.stalled):
                        dst.write(data)
                        await dst.drain()
            finally:
                dst.close()

        await asyncio.gather(
            pipe(reader, up_writer, True), pipe(up_reader, writer, False), return_exceptions=True
        )

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()
        self._server = None


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    proxy = Proxy((HOST or "127.0.0.1", int(PORT)))
    await proxy.open()
    yield proxy
    if proxy._server is not None:
        await proxy.close()


@pytest.mark.redis
async def test_lost_redis_falls_back_then_comes_back(
    proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="noa.auth")
    prefix = unique_prefix()
    limiter = RateLimiter(redis_url=proxy.url, prefix=prefix, timeout_s=2.0, retry_s=0.3)
    limit = RateLimit(per_s=0.001, burst=10)
    try:
        await limiter.start()
        assert (await limiter.hit("k", limit)).remaining == 9
        assert backend(limiter) == "redis"

        await proxy.close()
        during = [await asyncio.wait_for(limiter.hit("k", limit), 10) for _ in range(3)]
        assert backend(limiter) == "memory"
        # This worker's own bucket, full at first.
        assert [d.remaining for d in during] == [9, 8, 7]
        trips = limiter.round_trips
        await limiter.hit("k", limit)
        assert limiter.round_trips == trips  # within retry_s, Redis is not tried

        await asyncio.sleep(0.35)
        assert (await limiter.hit("k", limit)).allowed
        assert backend(limiter) == "memory"  # tried again, still down: same outage
        assert len(warnings_of(caplog)) == 1

        await proxy.open()  # same port
        await asyncio.sleep(0.35)
        back = await limiter.hit("k", limit)
        assert backend(limiter) == "redis"
        # Redis's bucket, as the outage left it.
        assert back.remaining == 8
        assert any("through Redis again" in r.getMessage() for r in caplog.records)
        assert len(warnings_of(caplog)) == 1
    finally:
        await limiter.close()
        await delete_prefix(SHARED_URL, prefix)


@pytest.mark.redis
async def test_a_redis_slower_than_the_timeout_fails_open(
    proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = unique_prefix()
    limiter = RateLimiter(redis_url=proxy.url, prefix=prefix, timeout_s=0.2, retry_s=60)
    limit = RateLimit(per_s=0.001, burst=3)
    try:
        await limiter.start()
        await limiter.hit("k", limit)
        assert backend(limiter) == "redis"
        proxy.stalled = True
        decisions = await asyncio.wait_for(
            asyncio.gather(*(limiter.hit("k", limit) for _ in range(10))), 10
        )
        # Every waiting caller got a memory decision; the memory bucket still limits.
        assert backend(limiter) == "memory"
        assert allowed(decisions) == 3
        assert limiter.round_trips == 2
        [warning] = warnings_of(caplog)
        assert "TimeoutError" in warning
    finally:
        await limiter.close()
        await delete_prefix(SHARED_URL, prefix)


async def test_a_restarted_redis_gets_the_script_again(private_redis: Any) -> None:
    limiter = RateLimiter(redis_url=private_redis.url, timeout_s=2.0, retry_s=0.2)
    limit = RateLimit(per_s=0.001, burst=10)
    direct = Redis.from_url(private_redis.url)
    try:
        await limiter.start()
        assert (await limiter.hit("k", limit)).remaining == 9
        await direct.script_flush()
        assert (await limiter.hit("k", limit)).remaining == 8
        assert backend(limiter) == "redis"
        assert limiter.round_trips == 4  # EVALSHA, then NOSCRIPT: SCRIPT LOAD, EVALSHA

        private_redis.stop()
        assert (await limiter.hit("k", limit)).allowed
        assert backend(limiter) == "memory"
        private_redis.start()  # empty: no bucket, no script
        await asyncio.sleep(0.25)
        assert (await limiter.hit("k", limit)).remaining == 9
        assert backend(limiter) == "redis"
    finally:
        await direct.aclose()
        await limiter.close()


@pytest.mark.redis
async def test_waiting_callers_are_answered_when_the_limiter_closes(proxy: Proxy) -> None:
    limiter = RateLimiter(redis_url=proxy.url, timeout_s=30.0)
    await limiter.start()
    proxy.stalled = True
    limit = RateLimit(per_s=0.001, burst=3)
    waiting = [asyncio.ensure_future(limiter.hit("k", limit)) for _ in range(5)]
    await asyncio.sleep(0.05)
    await limiter.close()
    decisions = await asyncio.wait_for(asyncio.gather(*waiting), 10)
    assert allowed(decisions) == 3
    assert backend(limiter) == "memory"
    await limiter.close()


@pytest.mark.redis
async def test_under_load_calls_are_gathered_into_fewer_round_trips() -> None:
    prefix = unique_prefix()
    limit = RateLimit(per_s=1000, burst=1000)

    async def staggered(limiter: RateLimiter) -> list[Decision]:
        async def one(i: int) -> Decision:
            await asyncio.sleep(i * 0.0005)  # a steady trickle, as from many connections
            return await limiter.hit("k", limit)

        return list(await asyncio.gather(*(one(i) for i in range(60))))

    eager = RateLimiter(redis_url=SHARED_URL, prefix=prefix + "e:", timeout_s=5.0)
    gathering = RateLimiter(
        redis_url=SHARED_URL, prefix=prefix + "g:", timeout_s=5.0, gather_s=0.005
    )
    try:
        for limiter in (eager, gathering):
            await limiter.start()
        assert allowed(await staggered(eager)) == 60
        assert allowed(await staggered(gathering)) == 60
        assert gathering.round_trips * 3 <= eager.round_trips
        # An idle limiter sends at once: each lone call is its own round trip.
        before = gathering.round_trips
        for _ in range(3):
            await asyncio.sleep(0.05)
            assert (await gathering.hit("idle", limit)).allowed
        assert gathering.round_trips == before + 3
    finally:
        for limiter in (eager, gathering):
            await limiter.close()
        await delete_prefix(SHARED_URL, prefix)
