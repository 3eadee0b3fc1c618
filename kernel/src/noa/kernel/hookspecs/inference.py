"""Inference hooks: plugins contribute model families (how to load and run a model)."""

from __future__ import annotations

from typing import Any

from noa.plugin_sdk import Registry, hookspec


@hookspec
def noa_register_model_families(families: Registry[Any]) -> None:
    """Contribute model families: ``families.add("bert-encoder", loader)``.

    A family turns a model directory (safetensors weights, config, tokenizer) into a
    runnable model; the inference plugin defines the loader interface. Called once per
    worker at assembly. Returns nothing.
    """
