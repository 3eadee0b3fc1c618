"""The ``[inference]`` config section."""

from __future__ import annotations

from typing import Annotated

import msgspec
from noa.plugin_sdk import PluginConfig

__all__ = ["InferenceConfig"]

Positive = Annotated[float, msgspec.Meta(gt=0)]


class InferenceConfig(PluginConfig, frozen=True):
    # The model repository: one folder per model. Empty: <server.data_dir>/models.
    repository: str = ""
    # Models to load at start-up, by name; "*" loads every model in the repository.
    # A model that fails to load is reported by name and cause; the server still starts.
    load: tuple[str, ...] = ("*",)
    # The model /v1/embed uses when a request names none. Empty: the first one loaded.
    default_model: str = ""
    # Most inputs one batch computes at once, whatever the number of requests.
    max_batch_size: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 32
    # Longest an input waits for others to share its batch, in milliseconds.
    max_queue_delay_ms: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 2.0
    # Inputs waiting per model before new requests get 429 with Retry-After.
    max_queue_items: Annotated[int, msgspec.Meta(ge=1)] = 2048
    # Time a request may take (queue and compute) before it gets 504, in milliseconds;
    # a request may ask for less (timeout_ms) but not more than max_timeout_ms.
    timeout_ms: Positive = 30_000.0
    max_timeout_ms: Positive = 300_000.0
    # Most inputs (texts) in one request.
    max_inputs: Annotated[int, msgspec.Meta(ge=1)] = 2048
    # Longest text accepted, in characters (checked before tokenizing).
    max_input_chars: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    # CPU threads the kernels of one model use; 0: one per core available to the process.
    threads: Annotated[int, msgspec.Meta(ge=0, le=1024)] = 0
