"""Token-bucket rate limits and daily quotas, shared by every worker through Redis.

- **Atomic**: one Lua script refills, checks and takes from each bucket (a hash of tokens
  and last refill time, timed by Redis's own ``TIME``, expiring once it would be full
  again) and checks and counts the daily quota (a counter per UTC day). A rejected
  call takes nothing.
- **Coalesced**: calls made while a Redis call is in flight, or in the same event-loop
  turn, wait and go together as one ``EVALSHA`` whose script evaluates each entry in
  order; one round trip per batch, however many requests arrived.
- **Fails open**: when Redis errors or takes longer than ``timeout_s``, the waiting calls
  are decided by this worker's memory buckets (the same algorithm), a warning is logged
  once per outage and Redis is tried again ``retry_s`` later. Memory holds at most
  ``memory_keys`` buckets, the least recently used going first.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

import msgspec
from noa.plugin_sdk.auth import RateLimit
from noa.plugin_sdk.metrics import MetricsRegistry, NoMetrics
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

__all__ = ["Decision", "RateLimiter"]

log = logging.getLogger("noa.auth")

_DAY_S = 86_400
# Entries per EVALSHA: bounds how long one script call holds Redis.
_MAX_BATCH = 512
# A worker whose last round trip began less than this long ago is busy.
_BUSY_S = 0.01
# Reason codes the script returns, by index.
_REASONS = ("", "rate", "quota")

# One entry per bucket of the batch: KEYS[i] is its hash (its daily quota counters are
# KEYS[i]:q:<day>), and ARGV[1] holds each entry's per_s, burst, cost, quota (0: none)
# and count (calls of that bucket in the batch), space-separated. Calls of one bucket
# are decided together, in order: as many as the tokens and the quota allow. Returns,
# per entry, how many were granted, the tokens before them (a string: Redis truncates
# Lua numbers) and why the rest were refused (1 rate, 2 quota).
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local day = math.floor(tonumber(t[1]) / 86400)
local to_midnight = 86400 - (now - day * 86400)
local n = {}
for v in string.gmatch(ARGV[1], '%S+') do n[#n + 1] = tonumber(v) end
local out = {}
for i = 1, #KEYS do
  local bucket = KEYS[i]
  local j = 5 * i - 4
  local rate, burst, cost, quota, count = n[j], n[j + 1], n[j + 2], n[j + 3], n[j + 4]
  local state = redis.call('HMGET', bucket, 't', 'ts')
  local tokens = tonumber(state[1])
  local ts = tonumber(state[2])
  if tokens == nil or ts == nil then
    tokens = burst
  else
    tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
  end
  local granted = math.min(count, math.floor(tokens / cost))
  local reason = 1
  local qkey
  if quota > 0 then
    qkey = bucket .. ':q:' .. day
    local left = math.floor((quota - (tonumber(redis.call('GET', qkey)) or 0)) / cost)
    if left < granted then
      granted = math.max(0, left)
      reason = 2
    end
  end
  if granted > 0 then
    local after = tokens - granted * cost
    redis.call('HSET', bucket, 't', string.format('%.17g', after),
      'ts', string.format('%.17g', now))
    local full_ms = math.ceil((burst - after) / rate * 1000) + 1000
    redis.call('PEXPIRE', bucket, math.min(full_ms, 1e12))
    if quota > 0 then
      redis.call('INCRBY', qkey, granted * cost)
      redis.call('EXPIRE', qkey, math.ceil(to_midnight) + 60)
    end
  end
  out[3 * i - 2] = granted
  out[3 * i - 1] = string.format('%.6f', tokens)
  out[3 * i] = reason
end
return out
"""
_SHA = hashlib.sha1(_SCRIPT.encode()).hexdigest()


class Decision(msgspec.Struct, frozen=True, gc=False):
    """What :meth:`RateLimiter.hit` decided, with what the RateLimit headers need."""

    allowed: bool
    #: The bucket's burst (RateLimit-Limit).
    limit: int
    #: Whole tokens left after this call (RateLimit-Remaining).
    remaining: int
    #: Seconds until the bucket is full again (RateLimit-Reset).
    reset_s: float
    #: 0 when allowed; else seconds until this call would be allowed (Retry-After).
    retry_after_s: float
    #: "" when allowed; "rate" (bucket empty) or "quota" (daily quota used up).
    reason: str = ""


def _decision(code: int, tokens: float, limit: RateLimit, cost: int) -> Decision:
    """The decision for a reason code and the tokens left, as the script reports them."""
    rate = limit.per_s
    if code == 1:
        retry = (cost - tokens) / rate
    elif code == 2:
        wall = time.time()
        retry = _DAY_S - wall % _DAY_S  # until the next UTC midnight
    else:
        retry = 0.0
    return Decision(
        code == 0,
        limit.burst,
        math.floor(tokens),
        (limit.burst - tokens) / rate,
        retry,
        _REASONS[code],
    )


class _Entry:
    __slots__ = ("cost", "future", "key", "limit", "numbers", "quota")

    def __init__(
        self, key: str, limit: RateLimit, quota: int, cost: int, future: asyncio.Future[Decision]
    ) -> None:
        self.key = key
        self.limit = limit
        self.quota = quota
        self.cost = cost
        self.future = future
        # The script's numbers for this entry; repr keeps a float exact.
        self.numbers = f"{limit.per_s!r} {limit.burst} {cost} {quota}"


class _Bucket:
    """One key's state in memory: the token bucket and its daily quota counter."""

    __slots__ = ("day", "tokens", "ts", "used")

    def __init__(self, tokens: float, ts: float) -> None:
        self.tokens = tokens
        self.ts = ts
        self.day = -1
        self.used = 0


class RateLimiter:
    """Token buckets per key, in Redis when ``redis_url`` is set, else in memory.

    ``clock`` times the memory buckets and the Redis retry delay (buckets in Redis are
    timed by Redis). ``memory_keys`` caps the memory buckets. ``metrics`` gets the
    counter ``auth_rate_limited_total{reason}``.
    """

    def __init__(
        self,
        *,
        redis_url: str | None,
        prefix: str = "noa:rl:",
        timeout_s: float = 0.25,
        retry_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        memory_keys: int = 100_000,
        metrics: MetricsRegistry | None = None,
        gather_s: float = 0.0,
    ) -> None:
        if memory_keys < 1:
            raise ValueError(f"memory_keys must be at least 1, got {memory_keys}")
        self._url = redis_url
        self._bucket_prefix = prefix + "b:"
        self._timeout_s = timeout_s
        self._gather_s = gather_s
        self._last_trip = -math.inf
        self._retry_s = retry_s
        self._clock = clock
        self._memory_keys = memory_keys
        self._memory: OrderedDict[str, _Bucket] = OrderedDict()
        self._client: Redis | None = None
        self._down_until = 0.0
        self._outage = False
        self._pending: list[_Entry] = []
        self._flusher: asyncio.Task[None] | None = None
        self._backend: Literal["redis", "memory"] = "memory"
        #: Commands sent to Redis by hit() (one per batch), for tests and debugging.
        self.round_trips = 0
        self._limited = (metrics or NoMetrics()).counter(
            "auth_rate_limited_total", "Calls refused by a rate limit or quota.", ("reason",)
        )

    @property
    def backend(self) -> Literal["redis", "memory"]:
        """Where the last decision was made."""
        return self._backend

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and load the script; an unreachable Redis means memory for now."""
        if self._url is None or self._client is not None:
            return
        pool = ConnectionPool.from_url(
            self._url,
            # Calls are serialised by the batching: one connection in use at a time.
            max_connections=4,
            socket_timeout=self._timeout_s,
            socket_connect_timeout=self._timeout_s,
            # After a Redis restart the pooled connection is dead; one retry on a fresh
            # connection spares a needless fallback.
            retry=Retry(NoBackoff(), retries=1),
            retry_on_error=[RedisConnectionError],
        )
        self._client = Redis(connection_pool=pool)
        try:
            await asyncio.wait_for(self._command("SCRIPT", "LOAD", _SCRIPT), self._timeout_s)
        except Exception as exc:
            self._redis_failed(exc)

    async def close(self) -> None:
        """Stop using Redis; calls still waiting are decided in memory. Idempotent."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        self._settle_in_memory(self._pending)
        self._pending = []
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
            await client.connection_pool.disconnect()

    # -- deciding -------------------------------------------------------------------------

    async def hit(
        self, key: str, limit: RateLimit, *, quota_per_day: int | None = None, cost: int = 1
    ) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket (and its daily quota) if it has them.

        ``cost`` must be between 1 and ``limit.burst`` (a larger cost could never pass).
        Never raises because Redis is unavailable.
        """
        if not (limit.per_s > 0 and 1 <= cost <= limit.burst):
            raise ValueError(
                f"rate limit needs per_s > 0 and 1 <= cost <= burst, got {limit} cost={cost}"
            )
        quota = quota_per_day or 0
        if not self._redis_usable():
            return self._decide_in_memory(key, limit, quota, cost)
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._pending.append(_Entry(key, limit, quota, cost, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        return await future

    def _redis_usable(self) -> bool:
        return self._client is not None and self._clock() >= self._down_until

    async def _flush(self) -> None:
        """Send what is pending, batch after batch, until nothing is."""
        try:
            while self._pending:
                # Under load (a round trip began moments ago), wait a little so more
                # calls share the next one: a round trip costs a worker far more CPU
                # than deciding one entry. An idle worker sends at once.
                if (
                    self._gather_s
                    and len(self._pending) < _MAX_BATCH
                    and self._clock() - self._last_trip < _BUSY_S
                ):
                    await asyncio.sleep(self._gather_s)
                self._last_trip = self._clock()
                batch = self._pending[:_MAX_BATCH]
                del self._pending[:_MAX_BATCH]
                # The calls of one bucket go as one entry (decided in order by the script).
                groups: dict[tuple[str, str], list[_Entry]] = {}
                for entry in batch:
                    groups.setdefault((entry.key, entry.numbers), []).append(entry)
                results: list[Any] | None = None
                try:
                    # Redis may have failed while this batch waited.
                    if self._redis_usable():
                        results = await asyncio.wait_for(self._evaluate(groups), self._timeout_s)
                        if self._outage:
                            self._outage = False
                            log.info("rate limits are shared through Redis again")
                except Exception as exc:
                    self._redis_failed(exc)
                finally:
                    # Also when cancelled: no caller is left waiting.
                    if results is None:
                        self._settle_in_memory(batch)
                    else:
                        self._settle_groups(list(groups.values()), results)
        finally:
            if self._flusher is asyncio.current_task():
                self._flusher = None

    async def _evaluate(self, groups: dict[tuple[str, str], list[_Entry]]) -> list[Any]:
        prefix = self._bucket_prefix
        args: list[str | int | float] = [_SHA, len(groups)]
        args.extend(prefix + key for key, _ in groups)
        args.append(" ".join(f"{numbers} {len(calls)}" for (_, numbers), calls in groups.items()))
        self.round_trips += 1
        try:
            results: list[Any] = await self._command("EVALSHA", *args)
        except NoScriptError:
            # Redis restarted or its script cache was flushed.
            await self._command("SCRIPT", "LOAD", _SCRIPT)
            self.round_trips += 2
            results = await self._command("EVALSHA", *args)
        return results

    async def _command(self, *args: str | int | float) -> Any:
        assert self._client is not None
        return await self._client.execute_command(*args)  # type: ignore[no-untyped-call]

    def _settle_in_memory(self, batch: list[_Entry]) -> None:
        """Decide ``batch`` in memory (Redis failed or the limiter closed)."""
        for entry in batch:
            if not entry.future.done():  # else its caller was cancelled
                decision = self._decide_in_memory(entry.key, entry.limit, entry.quota, entry.cost)
                entry.future.set_result(decision)

    def _settle_groups(self, groups: list[list[_Entry]], results: list[Any]) -> None:
        """Hand out the script's answers: per bucket, the first ``granted`` calls pass."""
        self._backend = "redis"
        for i, calls in enumerate(groups):
            granted, before, reason = (
                int(results[3 * i]),
                float(results[3 * i + 1]),
                int(results[3 * i + 2]),
            )
            for n, entry in enumerate(calls):
                cost = entry.cost
                if n < granted:
                    decision = _decision(0, before - (n + 1) * cost, entry.limit, cost)
                else:
                    decision = _decision(reason, before - granted * cost, entry.limit, cost)
                    self._limited.labels(decision.reason).inc()
                if not entry.future.done():  # else its caller was cancelled
                    entry.future.set_result(decision)

    def _redis_failed(self, exc: BaseException) -> None:
        if not self._outage:
            self._outage = True
            log.warning(
                "rate limit store Redis failed (%s: %s); deciding in this worker's memory, "
                "trying Redis again every %g s",
                type(exc).__name__,
                str(exc) or f"no answer within {self._timeout_s:g} s",
                self._retry_s,
            )
        self._down_until = self._clock() + self._retry_s

    def _decide_in_memory(self, key: str, limit: RateLimit, quota: int, cost: int) -> Decision:
        """The script's algorithm, on this worker's buckets."""
        self._backend = "memory"
        now = self._clock()
        rate, burst = limit.per_s, limit.burst
        bucket = self._memory.get(key)
        if bucket is None:
            bucket = self._memory[key] = _Bucket(burst, now)
            if len(self._memory) > self._memory_keys:
                self._memory.popitem(last=False)
        else:
            self._memory.move_to_end(key)
            bucket.tokens = min(burst, bucket.tokens + max(0.0, now - bucket.ts) * rate)
            bucket.ts = now
        reason = 0
        if quota:
            day = math.floor(time.time() / _DAY_S)
            if bucket.day != day:
                bucket.day, bucket.used = day, 0
            if bucket.used + cost > quota:
                reason = 2
        if not reason:
            if bucket.tokens >= cost:
                bucket.tokens -= cost
                if quota:
                    bucket.used += cost
            else:
                reason = 1
        if reason:
            self._limited.labels(_REASONS[reason]).inc()
        return _decision(reason, bucket.tokens, limit, cost)
