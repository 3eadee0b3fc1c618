"""The SDK's reference fakes pass every driver contract, plus what only a fake promises."""

from __future__ import annotations

from typing import Any

import pytest
from noa.plugin_sdk.errors import ServiceUnavailable
from noa.plugin_sdk.ports import (
    BrokerPort,
    CachePort,
    DevicePort,
    Message,
    ScoredPoint,
    StoragePort,
    VectorStorePort,
    subject_matches,
)
from noa.plugin_sdk.testing.contracts import (
    BrokerContract,
    CacheContract,
    DeviceContract,
    StorageContract,
    VectorStoreContract,
)
from noa.plugin_sdk.testing.fakes import (
    InProcessBroker,
    MemoryCache,
    MemoryVectorStore,
    NumpyDevice,
    SqliteStorage,
    translate_placeholders,
)


class TestMemoryCache(CacheContract):
    async def make_driver(self) -> CachePort:
        return MemoryCache()

    async def test_evicts_the_least_recently_used(self) -> None:
        cache = MemoryCache(max_entries=3)
        for key in "abc":
            await cache.set(key, key.encode())
        assert await cache.get("a") == b"a"  # now b is the least recently used
        await cache.set("d", b"d")
        assert len(cache) == 3
        assert await cache.get("b") is None
        assert [await cache.get(k) for k in "acd"] == [b"a", b"c", b"d"]

    async def test_expiry_follows_its_clock(self) -> None:
        now = [100.0]
        cache = MemoryCache(clock=lambda: now[0])
        await cache.set("k", b"v", ttl_s=10.0)
        now[0] = 109.9
        assert await cache.get("k") == b"v"
        now[0] = 110.0
        assert await cache.get("k") is None

    def test_refuses_a_size_below_one(self) -> None:
        with pytest.raises(ValueError, match="max_entries"):
            MemoryCache(max_entries=0)


class TestInProcessBroker(BrokerContract):
    async def make_driver(self) -> BrokerPort:
        return InProcessBroker()

    async def test_queue_keeps_messages_while_it_has_no_consumer(self) -> None:
        broker = InProcessBroker()
        got = self.inbox()
        first = await broker.consume("jobs", got)
        await first.unsubscribe()
        await broker.publish("jobs", b"waiting")
        await broker.consume("jobs", got)
        await got.wait_for_payload(b"waiting")
        await broker.close()

    async def test_a_handler_may_unsubscribe_itself(self) -> None:
        broker = InProcessBroker()
        got = self.inbox()

        async def once(message: Message) -> None:
            await got(message)
            await subscription.unsubscribe()

        subscription = await broker.subscribe("s", once)
        control = self.inbox()
        await broker.subscribe("s", control)
        for payload in (b"1", b"2"):
            await broker.publish("s", payload)
        await control.wait_for_count(2)
        assert got.payloads == [b"1"]
        await broker.close()

    async def test_publish_after_close_is_refused(self) -> None:
        broker = InProcessBroker()
        await broker.close()
        with pytest.raises(ServiceUnavailable):
            await broker.publish("s", b"x")


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("a.b", "a.b", True),
        ("a.b", "a.c", False),
        ("a.*", "a.b", True),
        ("a.*", "a", False),
        ("a.*", "a.b.c", False),
        ("*.b", "a.b", True),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        (">", "a", True),
        ("a.*.c.>", "a.x.c.d.e", True),
    ],
)
def test_subject_matches(pattern: str, subject: str, expected: bool) -> None:
    assert subject_matches(pattern, subject) is expected


class TestSqliteStorage(StorageContract):
    async def make_driver(self) -> StoragePort:
        return SqliteStorage()

    async def test_statement_on_the_storage_inside_its_transaction_is_refused(self) -> None:
        storage = SqliteStorage()
        async with storage.transaction():
            with pytest.raises(RuntimeError, match="transaction"):
                await storage.execute("SELECT 1")
        await storage.close()

    async def test_transaction_handle_is_dead_after_the_block(self) -> None:
        storage = SqliteStorage()
        async with storage.transaction() as tx:
            pass
        with pytest.raises(RuntimeError, match="ended"):
            await tx.execute("SELECT 1")
        await storage.close()


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT $1, $2", "SELECT ?1, ?2"),
        ("SELECT $10 + $1", "SELECT ?10 + ?1"),
        ("SELECT '$1', \"$2\", $3", "SELECT '$1', \"$2\", ?3"),
        ("SELECT 'it''s $1', $1", "SELECT 'it''s $1', ?1"),
        ("SELECT $1 -- $2\n, /* $3 */ $4", "SELECT ?1 -- $2\n, /* $3 */ ?4"),
    ],
)
def test_translate_placeholders(sql: str, expected: str) -> None:
    assert translate_placeholders(sql) == expected


class TestMemoryVectorStore(VectorStoreContract):
    async def make_driver(self) -> VectorStorePort:
        return MemoryVectorStore()


class _PersistingMemoryStore(MemoryVectorStore):
    """Keeps its collections through ``close``, as a store on disk would."""

    kept: dict[str, Any]

    async def close(self) -> None:
        self.kept = dict(self._collections)
        await super().close()


class _RestartingContract(VectorStoreContract):
    """Not collected: its restart test is run by hand below, the fake keeps no data."""

    lose: str | None = None

    async def make_driver(self) -> VectorStorePort:
        return _PersistingMemoryStore()

    async def reopen_driver(self, driver: VectorStorePort) -> VectorStorePort | None:
        assert isinstance(driver, _PersistingMemoryStore)
        store = MemoryVectorStore()
        store._collections.update(driver.kept)
        if self.lose:
            await store.delete(next(iter(driver.kept)), [self.lose])
        return store


async def test_the_restart_test_passes_when_the_data_is_kept() -> None:
    contract = _RestartingContract()
    await contract.test_data_survives_a_restart(await contract.make_driver())


async def test_the_restart_test_fails_when_a_point_is_lost() -> None:
    contract = _RestartingContract()
    contract.lose = "p10"
    with pytest.raises(AssertionError):
        await contract.test_data_survives_a_restart(await contract.make_driver())


@pytest.mark.parametrize(("min_recall", "passes"), [(1.0, False), (0.95, False), (0.9, True)])
def test_an_approximate_driver_is_held_to_its_recall(min_recall: float, passes: bool) -> None:
    contract = TestMemoryVectorStore()
    contract.min_recall_at_10 = min_recall
    exact = {f"p{n}": 1.0 - n / 100 for n in range(11)}
    best = [(f"p{n}", exact[f"p{n}"]) for n in range(10)]
    # Each query misses its tenth point and returns the eleventh: recall@10 is 0.9.
    hits = [ScoredPoint(id=f"p{n}", score=exact[f"p{n}"]) for n in (*range(9), 10)]
    if passes:
        contract._assert_recall([hits, hits], [best, best], [exact, exact])
    else:
        with pytest.raises(AssertionError):
            contract._assert_recall([hits, hits], [best, best], [exact, exact])


class TestNumpyDevice(DeviceContract):
    def make_driver(self) -> DevicePort:
        return NumpyDevice()


def test_importing_the_sdk_ports_and_fakes_needs_no_numpy() -> None:
    import subprocess
    import sys

    code = (
        "import sys, builtins\n"
        "real = builtins.__import__\n"
        "def guard(name, *a, **k):\n"
        "    if name.split('.')[0] == 'numpy': raise ImportError('numpy imported')\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guard\n"
        "import noa.plugin_sdk.ports, noa.plugin_sdk.testing.fakes\n"
        "import noa.plugin_sdk.testing.contracts\n"
        "assert 'numpy' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
