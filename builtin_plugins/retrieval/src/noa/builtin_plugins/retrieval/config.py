"""The ``[retrieval]`` config section."""

from __future__ import annotations

from typing import Annotated

import msgspec
from noa.plugin_sdk import PluginConfig

__all__ = ["RetrievalConfig"]


class RetrievalConfig(PluginConfig, frozen=True):
    # Folder of the embedded vector store ([drivers] vectors = "embedded"); empty:
    # <server.data_dir>/vectors.
    embedded_path: str = ""
    # A search whose selected rows times the dimension is at most this is scored exactly
    # in float32; above it an int8 pass picks the candidates (rescored exactly).
    embedded_exact_max_values: Annotated[int, msgspec.Meta(ge=0)] = 4_000_000
