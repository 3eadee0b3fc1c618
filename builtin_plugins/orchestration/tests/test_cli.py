"""``noa tasks``, the real command, on the database a (stopped) server left behind.
Independent commands run side by side: each boots the kernel (seconds)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from noa.plugin_sdk.tasks import TaskContext, TaskType


async def broken(ctx: TaskContext, job: dict[str, Any]) -> None:
    raise RuntimeError("upstream down")


async def fine(ctx: TaskContext, job: dict[str, Any]) -> str:
    return "ok"


async def test_noa_tasks_list_show_cancel_retry_dead(
    serve: Any, submit: Any, finished: Any, data_dir: str, noa_cli: Any
) -> None:
    kit = {"broken": TaskType(broken, max_retries=0), "fine": TaskType(fine)}
    async with serve(kit) as noa:
        dead = [(await submit(noa, type="broken", input={"n": n}))["id"] for n in range(3)]
        ok = (await submit(noa, type="fine"))["id"]
        later = (await submit(noa, type="fine", run_at=4102444800))["id"]  # stays queued
        for task_id in [*dead, ok]:
            await finished(noa, task_id)
    env = {"NOA_SERVER__DATA_DIR": data_dir}
    with ThreadPoolExecutor(4) as pool:
        listed, dead_json, only_json, shown, ok_json, cancelled, one = pool.map(
            lambda args: noa_cli(*args, env=env),
            [
                ("tasks", "list"),
                ("tasks", "list", "--state", "dead", "--json"),
                ("tasks", "list", "--type", "fine", "--limit", "1", "--json"),
                ("tasks", "show", dead[0]),
                ("tasks", "show", ok, "--json"),
                ("tasks", "cancel", later),
                ("tasks", "retry-dead", dead[0]),
            ],
        )
    assert listed.returncode == 0, listed.stderr
    assert all(task_id in listed.stdout for task_id in [*dead, ok, later])
    assert "handler_error" in listed.stdout
    assert sorted(r["id"] for r in json.loads(dead_json.stdout)) == sorted(dead)
    assert [r["id"] for r in json.loads(only_json.stdout)] == [later]
    assert shown.returncode == 0, shown.stderr
    assert "state:    dead" in shown.stdout
    assert "handler_error: RuntimeError: upstream down" in shown.stdout
    assert json.loads(ok_json.stdout)["output"] == "ok"
    assert (cancelled.returncode, cancelled.stdout.strip()) == (0, f"cancelled task {later} (fine)")
    assert (one.returncode, one.stdout.strip()) == (0, f"queued task {dead[0]} again")

    again = noa_cli("tasks", "cancel", later, env=env)
    assert again.returncode == 1
    assert "is cancelled: only a queued or running task can be cancelled" in again.stderr
    rest = noa_cli("tasks", "retry-dead", "--all", "--type", "broken", env=env)
    assert (rest.returncode, rest.stdout.strip()) == (0, "queued 2 dead task(s) again")
    queued = json.loads(noa_cli("tasks", "list", "--state", "queued", "--json", env=env).stdout)
    assert sorted(r["id"] for r in queued) == sorted(dead)
    assert {r["attempts"] for r in queued} == {0}

    # A server started on that database runs them again.
    async with serve(kit) as noa:
        for task_id in dead:
            assert (await finished(noa, task_id))["state"] == "dead"


def test_noa_tasks_errors_are_one_line_with_exit_codes(noa_cli: Any, data_dir: str) -> None:
    env = {"NOA_SERVER__DATA_DIR": data_dir}
    cases = [
        (("tasks", "show", "nope"), 1, "no task 'nope'"),
        (("tasks", "retry-dead", "nope"), 1, "no task 'nope'"),
        (("tasks", "retry-dead"), 2, "give a task ID or --all"),
        (("tasks", "retry-dead", "x", "--type", "t"), 2, "--type goes with --all"),
        (("tasks", "list", "--state", "sleeping"), 2, "'sleeping' is not one of"),
    ]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda case: noa_cli(*case[0], env=env), cases))
        empty = pool.submit(noa_cli, "tasks", "list", env=env)
        fresh = {"NOA_SERVER__DATA_DIR": data_dir + "-new"}
        unmigrated = pool.submit(noa_cli, "tasks", "list", env=fresh).result()
    for (args, code, message), result in zip(cases, results, strict=True):
        assert (result.returncode, message in result.stderr) == (code, True), (args, result.stderr)
    assert (empty.result().returncode, empty.result().stdout.strip()) == (0, "no tasks")
    assert unmigrated.returncode == 1
    assert "run `noa migrate apply` first" in unmigrated.stderr
    assert len(unmigrated.stderr.strip().splitlines()) == 1
