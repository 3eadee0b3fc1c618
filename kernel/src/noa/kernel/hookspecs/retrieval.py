"""Retrieval hooks: plugins contribute embedders for collections and ingestion."""

from __future__ import annotations

from typing import Any

from noa.plugin_sdk import Host, Registry, hookspec


@hookspec
def noa_register_embedders(embedders: Registry[Any], host: Host) -> None:
    """Contribute embedders: ``embedders.add("fastembed", embedder)``, each a
    :class:`noa.plugin_sdk.embedding.Embedder`.

    The retrieval plugin chooses one per collection by name. Called once per worker,
    after ``noa_configure``. Returns nothing.
    """
