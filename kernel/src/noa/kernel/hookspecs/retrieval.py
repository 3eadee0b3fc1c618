"""Retrieval hooks: plugins contribute embedders for collections and ingestion."""

from __future__ import annotations

from typing import Any

from noa.plugin_sdk import Registry, hookspec


@hookspec
def noa_register_embedders(embedders: Registry[Any]) -> None:
    """Contribute embedders: ``embedders.add("fastembed", factory)``.

    The retrieval plugin chooses one per collection by name and defines the embedder
    interface. Called once per worker at assembly. Returns nothing.
    """
