"""The ``[fastembed]`` config section: which local model folders to serve, and limits."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from noa.plugin_sdk import PluginConfig

__all__ = ["FastembedConfig", "ModelSpec", "Pooling"]

Pooling = Literal["mean", "cls", "disabled"]


class ModelSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One model written as a table: ``[fastembed.models.NAME]``."""

    # The model folder: the ONNX file and tokenizer.json, tokenizer_config.json (and
    # config.json, special_tokens_map.json when the model has them). Required.
    path: str
    # How token vectors become one vector: "mean" (over the attention mask, as
    # sentence-transformers' mean pooling), "cls" (the first token), or "disabled" (the
    # graph already outputs one vector per text). Default "mean".
    pooling: Pooling = "mean"
    # Scale every vector to unit length (sentence-transformers' Normalize module).
    # Default true.
    normalize: bool = True
    # The ONNX file inside the folder. Default "model.onnx".
    model_file: str = "model.onnx"


class FastembedConfig(PluginConfig, frozen=True):
    # The models this embedder serves, by the name collections use: a table from name to
    # a folder path ("minilm-onnx" = "/srv/models/minilm-onnx"), or to a table with
    # path, pooling, normalize and model_file (see ModelSpec). A plain path means
    # pooling "mean", normalize true, model_file "model.onnx". Relative paths are read
    # from the working directory. Every model loads at start-up; one that can't stops the
    # start. Nothing is ever downloaded. Default: none.
    models: dict[str, str | ModelSpec] = msgspec.field(default_factory=dict)
    # The model a collection gets when it names none. Empty: the first of `models`.
    default_model: str = ""
    # Threads onnxruntime uses for one model; 0: its default, one per core.
    threads: Annotated[int, msgspec.Meta(ge=0, le=1024)] = 0
    # Texts computed together. Texts are sorted by length first, so each batch is padded
    # only to its own longest text (fastembed's default of 256 pads to the longest of all).
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 32
    # Most texts one embed call may carry; more is 413 (PayloadTooLarge).
    max_texts: Annotated[int, msgspec.Meta(ge=1)] = 2048
    # Longest text accepted, in characters (checked before tokenizing; longer is 413).
    # Texts are cut to the model's token limit (tokenizer_config.json's model_max_length).
    max_chars: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    # Embed calls waiting for the model beyond the one it is computing; more is 429.
    max_waiting: Annotated[int, msgspec.Meta(ge=0)] = 64

    def specs(self) -> dict[str, ModelSpec]:
        """Every model as a :class:`ModelSpec`, in config order."""
        return {
            name: ModelSpec(path=spec) if isinstance(spec, str) else spec
            for name, spec in self.models.items()
        }
