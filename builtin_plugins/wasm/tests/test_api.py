"""WASM plugins through the real HTTP API: the good ones answer, each hostile one ends
its own call (or load) with its specific code, and the server keeps serving."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

OBJECT = {"type": "object"}
ADDEND = {
    "type": "object",
    "required": ["a"],
    "properties": {"a": {"type": "integer"}},
    "additionalProperties": False,
}


async def invoke(client: httpx.AsyncClient, name: str, payload: Any, entry: str = "run") -> Any:
    return await client.post(f"/v1/plugins/{name}/invoke", json={"entry": entry, "input": payload})


async def still_serving(client: httpx.AsyncClient) -> None:
    """The echo plugin still answers: one failed call touched nothing else."""
    answer = await invoke(client, "echo", {"still": "here"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["output"] == {"still": "here"}


def error(answer: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = answer.json()["error"]
    return body


@pytest.fixture
def plugins(make_plugin: Callable[..., Path], wat: ModuleType) -> None:
    make_plugin("echo", wat.ECHO, entries={"run": {"input_schema": OBJECT}})


async def test_echo_round_trip_and_listing(serve: Any, plugins: None) -> None:
    async with serve() as noa:
        answer = await invoke(noa.client, "echo", {"a": 1, "b": [True, None, "x"]})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {
            "plugin": "echo",
            "entry": "run",
            "output": {"a": 1, "b": [True, None, "x"]},
        }
        listed = (await noa.client.get("/v1/wasm/plugins")).json()["data"]
        assert [(p["name"], p["state"], p["version"]) for p in listed] == [
            ("echo", "loaded", "1.0.0")
        ]
        assert listed[0]["entries"][0]["input_schema"] == OBJECT


async def test_input_failing_the_schema_is_422(
    serve: Any, make_plugin: Callable[..., Path], wat: ModuleType, plugins: None
) -> None:
    make_plugin("strict", wat.ECHO, entries={"run": {"input_schema": ADDEND}})
    async with serve() as noa:
        answer = await invoke(noa.client, "strict", {"a": "one"})
        assert answer.status_code == 422
        assert error(answer)["code"] == "wasm_invalid_input"
        assert "$.a: expected integer, got string" in error(answer)["message"]
        assert (await invoke(noa.client, "strict", {"a": 1})).json()["output"] == {"a": 1}
        missing = await invoke(noa.client, "nope", {})
        assert (missing.status_code, error(missing)["code"]) == (404, "wasm_plugin_not_found")
        await still_serving(noa.client)


@pytest.mark.parametrize(
    ("source", "manifest", "status", "code"),
    [
        ("LOOP", {"limits": {"timeout_ms": 200}}, 504, "wasm_timeout"),
        ("LOOP", {"limits": {"fuel": 1_000_000}}, 504, "wasm_timeout"),
        ("UNREACHABLE", {}, 502, "wasm_trap"),
        ("GROW", {"limits": {"memory_mib": 2}}, 502, "wasm_memory_limit"),
        ("FLOOD", {"limits": {"max_output_bytes": 100_000}}, 502, "wasm_output_too_large"),
        ("NOT_JSON", {}, 502, "wasm_bad_output"),
        ("FAILS", {}, 502, "wasm_failed"),
        ("CLOCK", {}, 502, "wasm_failed"),
    ],
)
async def test_a_hostile_call_ends_with_its_code(
    serve: Any,
    make_plugin: Callable[..., Path],
    wat: ModuleType,
    plugins: None,
    source: str,
    manifest: dict[str, Any],
    status: int,
    code: str,
) -> None:
    make_plugin("hostile", getattr(wat, source), **manifest)
    async with serve() as noa:
        answer = await invoke(noa.client, "hostile", {})
        assert answer.status_code == status, answer.text
        assert error(answer)["code"] == code
        await still_serving(noa.client)
        # The server is fine, and so is the hostile plugin's next call (a fresh store).
        again = await invoke(noa.client, "hostile", {})
        assert error(again)["code"] == code


async def test_failed_exit_carries_stderr_and_clock_needs_a_grant(
    serve: Any, make_plugin: Callable[..., Path], wat: ModuleType, plugins: None
) -> None:
    make_plugin("fails", wat.FAILS)
    make_plugin("clock", wat.CLOCK)
    make_plugin("timed", wat.CLOCK, capabilities={"clock": True})
    async with serve() as noa:
        failed = error(await invoke(noa.client, "fails", {}))
        assert failed["message"] == "fails.run exited with code 3; stderr: boom: bad day"
        denied = error(await invoke(noa.client, "clock", {}))
        assert denied["message"].startswith("clock.run exited with code 52")  # ENOSYS
        granted = await invoke(noa.client, "timed", {})
        # Exit 0 with no output: the clock answered, and empty stdout is not JSON.
        assert error(granted)["code"] == "wasm_bad_output"


async def test_files_only_inside_a_preopen_and_read_only_by_default(
    serve: Any, make_plugin: Callable[..., Path], wat: ModuleType, plugins: None, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "data.json").write_text('{"inside": true}')
    (tmp_path / "secret.json").write_text('{"secret": 1}')
    grant = {"capabilities": {"dirs": [{"host": str(shared), "guest": "/data"}]}}
    rw = {"capabilities": {"dirs": [{"host": str(shared), "guest": "/data", "read_only": False}]}}
    make_plugin("reader", wat.file_module("data.json", write=False), **grant)
    make_plugin("escaper", wat.file_module("../secret.json", write=False), **grant)
    make_plugin("absolute", wat.file_module(str(tmp_path / "secret.json"), write=False), **grant)
    make_plugin("writer", wat.file_module("new.json", write=True), **grant)
    make_plugin("rwriter", wat.file_module("new.json", write=True), **rw)
    make_plugin("ambient", wat.file_module("data.json", write=False))
    async with serve() as noa:
        inside = await invoke(noa.client, "reader", {})
        assert inside.json()["output"] == {"inside": True}, inside.text
        for name in ("escaper", "absolute", "writer", "ambient"):
            answer = await invoke(noa.client, name, {})
            assert answer.status_code == 502, (name, answer.text)
            assert error(answer)["code"] == "wasm_failed", name
            await still_serving(noa.client)
        assert not (shared / "new.json").exists()
        written = await invoke(noa.client, "rwriter", {})
        assert written.json()["output"] == {}, written.text
        assert (shared / "new.json").read_text() == "{}"


async def test_malformed_plugins_fail_to_load_and_the_others_serve(
    serve: Any, make_plugin: Callable[..., Path], wat: ModuleType, plugins: None, plugin_root: Path
) -> None:
    make_plugin("garbage", b"\0asm\x01\0\0\0\xff\xff", module="plugin.wasm")
    make_plugin("precompiled", b"\x7fELF\x02\x01\x01", module="plugin.wasm")
    make_plugin("typo", wat.ECHO, entrys={})
    make_plugin("noexport", wat.ECHO, entries={"run": {"export": "main"}})
    make_plugin("toohigh", wat.ECHO, limits={"memory_mib": 100_000})
    make_plugin("badschema", wat.ECHO, entries={"run": {"input_schema": {"oneOf": []}}})
    (plugin_root / "empty").mkdir()
    async with serve() as noa:
        rows = {r["name"]: r for r in (await noa.client.get("/v1/wasm/plugins")).json()["data"]}
        assert {name: row["error_code"] for name, row in rows.items()} == {
            "badschema": "wasm_manifest_invalid",
            "echo": None,
            "empty": "wasm_manifest_missing",
            "garbage": "wasm_module_invalid",
            "noexport": "wasm_entry_missing",
            "precompiled": "wasm_precompiled_refused",
            "toohigh": "wasm_limit_too_high",
            "typo": "wasm_manifest_invalid",
        }
        assert "entrys" in rows["typo"]["error"]
        ready = (await noa.client.get("/ready")).json()
        wasm = next(c for c in ready["components"] if c["name"] == "wasm")
        assert wasm["status"] == "degraded"
        await still_serving(noa.client)


async def test_concurrent_calls_are_isolated(
    serve: Any, make_plugin: Callable[..., Path], wat: ModuleType, plugins: None
) -> None:
    make_plugin("counter", wat.COUNTER)
    async with serve(max_concurrency=8) as noa:
        answers = await asyncio.gather(*(invoke(noa.client, "counter", {}) for _ in range(64)))
        assert {a.status_code for a in answers} == {200}
        assert [a.json()["output"] for a in answers] == [{"count": 1}] * 64


async def test_reload_picks_up_a_new_plugin(
    serve: Any, make_plugin: Callable[..., Path], wat: ModuleType, plugins: None
) -> None:
    async with serve() as noa:
        assert error(await invoke(noa.client, "late", {}))["code"] == "wasm_plugin_not_found"
        make_plugin("late", wat.ECHO)
        reloaded = await noa.client.post("/v1/admin/wasm/reload")
        assert reloaded.status_code == 200, reloaded.text
        assert {r["name"] for r in reloaded.json()["data"]} == {"echo", "late"}
        assert (await invoke(noa.client, "late", [1])).json()["output"] == [1]


async def test_python_api_for_other_plugins(serve: Any, plugins: None) -> None:
    async with serve() as noa:
        wasm = noa.kernel.state["noa.wasm"]
        assert await wasm.invoke("echo", "run", {"x": 2}) == {"x": 2}
