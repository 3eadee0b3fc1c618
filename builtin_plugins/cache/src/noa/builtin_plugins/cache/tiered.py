"""The tiered cache other plugins use: this worker's memory first, then the shared driver,
then (for entries stored ``durable=True``) the database.

- **Reads** try memory, then the shared tier (Redis); a shared hit is copied into memory
  for at most ``local_ttl_s``.
- **Writes** go to both tiers; **invalidation** removes from both. (Another worker's
  memory copy lives at most ``local_ttl_s`` longer.)
- **Single flight**: concurrent ``get_or_compute`` calls for one key in one worker run
  the computation once and share its result (or its exception).
- **Failures** of the shared tier are not the caller's: the call falls back to memory,
  the shared tier is skipped for ``retry_s``, then tried again; ``health`` says degraded
  (or failing, if the shared tier is required) meanwhile.
- ``cache_hits_total``, ``cache_misses_total`` and ``cache_errors_total``, by ``tier``.

- **Durable** entries (``set(..., durable=True)``) are also written to the database
  first, so they survive restarts; ``get(..., durable=True)`` looks there after the
  other tiers miss and copies a hit back into them. ``invalidate`` removes from every
  tier.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from noa.builtin_plugins.cache.durable import DurableTier
from noa.plugin_sdk.memory_cache import MemoryCache
from noa.plugin_sdk.metrics import MetricsRegistry, NoMetrics
from noa.plugin_sdk.ports.cache import CachePort
from noa.plugin_sdk.types import CheckResult

__all__ = ["TieredCache"]

log = logging.getLogger("noa.cache")


class TieredCache:
    def __init__(
        self,
        local: MemoryCache,
        shared: CachePort | None = None,
        *,
        durable: DurableTier | None = None,
        shared_name: str = "redis",
        default_ttl_s: float = 300.0,
        local_ttl_s: float = 5.0,
        retry_s: float = 1.0,
        shared_required: bool = False,
        metrics: MetricsRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.local = local
        self.shared = shared
        self.durable = durable
        self.shared_name = shared_name
        self.default_ttl_s = default_ttl_s
        self.local_ttl_s = local_ttl_s
        self.retry_s = retry_s
        self.shared_required = shared_required
        self._clock = clock
        self._down_until = 0.0
        self._last_error = ""
        self._inflight: dict[str, asyncio.Future[bytes]] = {}
        registry = metrics or NoMetrics()
        self._hits = registry.counter("cache_hits_total", "Cache hits, by tier.", ("tier",))
        self._misses = registry.counter("cache_misses_total", "Cache misses, by tier.", ("tier",))
        self._errors = registry.counter(
            "cache_errors_total", "Failed calls to a cache tier, by tier.", ("tier",)
        )

    # -- the shared tier, guarded ---------------------------------------------------------

    def _shared_usable(self) -> CachePort | None:
        if self.shared is None or self._clock() < self._down_until:
            return None
        return self.shared

    def _shared_failed(self, operation: str, exc: Exception) -> None:
        if self._clock() >= self._down_until:
            log.warning(
                "cache tier %s failed (%s: %s: %s); using memory only for %g s",
                self.shared_name,
                operation,
                type(exc).__name__,
                exc,
                self.retry_s,
            )
        self._down_until = self._clock() + self.retry_s
        self._last_error = f"{type(exc).__name__}: {exc}"
        self._errors.labels(self.shared_name).inc()

    # -- the API ----------------------------------------------------------------------------

    async def get(self, key: str, *, durable: bool = False) -> bytes | None:
        value = await self.local.get(key)
        if value is not None:
            self._hits.labels("memory").inc()
            return value
        self._misses.labels("memory").inc()
        shared = self._shared_usable()
        if shared is not None:
            try:
                value = await shared.get(key)
            except Exception as exc:
                self._shared_failed("get", exc)
            else:
                if value is not None:
                    self._hits.labels(self.shared_name).inc()
                    await self.local.set(key, value, self.local_ttl_s)
                    return value
                self._misses.labels(self.shared_name).inc()
        if not durable:
            return None
        found = await self._durable_tier().get(key)
        if found is None:
            self._misses.labels("database").inc()
            return None
        self._hits.labels("database").inc()
        value, remaining = found
        await self._fill(key, value, remaining)
        return value

    def _durable_tier(self) -> DurableTier:
        if self.durable is None:
            raise RuntimeError(
                "durable cache entries need the storage plugin and its table "
                "(enable 'storage', then run `noa migrate apply`)"
            )
        return self.durable

    async def _fill(self, key: str, value: bytes, ttl: float) -> None:
        """Put ``value`` in memory and the shared tier (best effort)."""
        local_ttl = ttl if self.shared is None else min(ttl, self.local_ttl_s)
        await self.local.set(key, value, local_ttl)
        shared = self._shared_usable()
        if shared is not None:
            try:
                await shared.set(key, value, ttl)
            except Exception as exc:
                self._shared_failed("set", exc)

    async def set(
        self, key: str, value: bytes, ttl_s: float | None = None, *, durable: bool = False
    ) -> None:
        ttl = self.default_ttl_s if ttl_s is None else ttl_s
        if not ttl > 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        if durable:
            # The database first: a durable write that fails must fail for the caller.
            await self._durable_tier().set(key, value, ttl)
        # With a shared tier, memory holds only a short-lived copy (other workers may
        # change or invalidate the entry); alone, memory holds it for its whole ttl.
        await self._fill(key, value, ttl)

    async def invalidate(self, key: str) -> None:
        await self.local.delete(key)
        shared = self._shared_usable()
        if shared is not None:
            try:
                await shared.delete(key)
            except Exception as exc:
                self._shared_failed("delete", exc)
        if self.durable is not None:
            await self.durable.delete(key)

    async def get_or_compute(
        self,
        key: str,
        compute: Callable[[], Awaitable[bytes]],
        ttl_s: float | None = None,
        *,
        durable: bool = False,
    ) -> bytes:
        """The cached value, or ``compute()``'s, stored; one computation per key at a time.

        Callers that arrive while the value is being computed wait for that computation
        and share its result or its exception. If the computing caller is cancelled,
        the waiters start over (one of them computes).
        """
        while True:
            value = await self.get(key, durable=durable)
            if value is not None:
                return value
            running = self._inflight.get(key)
            if running is None:
                break
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if running.cancelled() and not (task is not None and task.cancelling()):
                    continue
                raise
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            value = await compute()
            await self.set(key, value, ttl_s, durable=durable)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # marks it retrieved: waiters re-raise it
            raise
        else:
            future.set_result(value)
            return value
        finally:
            del self._inflight[key]

    async def health(self) -> CheckResult:
        """ok; degraded while the shared tier fails (failing when it is required)."""
        if self.shared is None:
            return CheckResult()
        try:
            ok = await self.shared.ping()
        except Exception as exc:
            self._shared_failed("ping", exc)
            ok = False
        else:
            if ok:
                self._down_until = 0.0  # answered again: use it at once
        if ok:
            return CheckResult()
        status = "failing" if self.shared_required else "degraded"
        return CheckResult(
            status=status,
            detail=f"{self.shared_name} unreachable ({self._last_error}); serving from memory",
        )

    async def close(self) -> None:
        if self.shared is not None:
            await self.shared.close()
