"""The plugin passes the plugin contract; its pieces check what they are given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from noa.builtin_plugins.orchestration.config import OrchestrationConfig
from noa.builtin_plugins.orchestration.worker import backoff_s
from noa.plugin_sdk import PluginStartError
from noa.plugin_sdk.tasks import InvalidTaskInput, TaskContext, TaskType
from noa.plugin_sdk.testing.contracts import PluginContract
from noa.plugin_sdk.testing.harness import boot_kernel


class TestOrchestrationPluginContract(PluginContract):
    plugin = "orchestration"
    needs = ("storage", "broker")

    @pytest.fixture(autouse=True)
    def _data_dir(self, tmp_path: Path) -> None:
        self.config: dict[str, Any] = {"server": {"data_dir": str(tmp_path)}}


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    config = OrchestrationConfig(backoff_base_s=1.0, backoff_max_s=10.0)
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (80, 10.0)):
        delays = [backoff_s(config, attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


async def _noop(ctx: TaskContext, job: Any) -> None:
    return None


class Point(msgspec.Struct):
    x: int


def test_task_types_check_their_definition_and_their_input() -> None:
    with pytest.raises(TypeError, match="not both"):
        TaskType(_noop, input_type=Point, validate=dict)
    with pytest.raises(TypeError, match=r"msgspec\.Struct"):
        TaskType(_noop, input_type=dict)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout_s"):
        TaskType(_noop, timeout_s=0)
    with pytest.raises(ValueError, match="max_retries"):
        TaskType(_noop, max_retries=-1)
    assert TaskType(_noop, input_type=Point).parse_input({"x": 1}) == Point(1)
    with pytest.raises(InvalidTaskInput, match=r"\$.x"):
        TaskType(_noop, input_type=Point).parse_input({"x": "one"})

    def positive(raw: dict[str, Any]) -> int:
        if raw.get("n", 0) <= 0:
            raise ValueError("n must be positive")
        return int(raw["n"])

    assert TaskType(_noop, validate=positive).parse_input({"n": 2}) == 2
    with pytest.raises(InvalidTaskInput, match="n must be positive"):
        TaskType(_noop, validate=positive).parse_input({})


def test_a_lease_shorter_than_two_polls_is_refused(tmp_path: Path) -> None:
    config = {
        "server": {"data_dir": str(tmp_path)},
        "orchestration": {"lease_s": 1.0, "poll_interval_s": 1.0},
    }
    with pytest.raises(PluginStartError, match="lease_s"):
        boot_kernel(["http", "storage", "broker", "orchestration"], config=config)
