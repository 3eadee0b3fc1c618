"""The ``[retrieval]`` config section."""

from __future__ import annotations

from typing import Annotated

import msgspec
from noa.builtin_plugins.retrieval.chunking import ChunkingConfig
from noa.plugin_sdk import PluginConfig, Secret

__all__ = ["RetrievalConfig"]


class RetrievalConfig(PluginConfig, frozen=True):
    # The embedder of a collection created without one (noa_register_embedders; the
    # inference plugin contributes "inference", serving the models of its repository).
    default_embedder: str = "inference"
    # How documents are cut into chunks when a collection doesn't say:
    # [retrieval.chunking] mode = "sentences" | "tokens" | "characters", size, overlap.
    chunking: ChunkingConfig = ChunkingConfig()
    # Documents one ingest call may carry, and characters one document may hold.
    max_documents: Annotated[int, msgspec.Meta(ge=1)] = 256
    max_document_chars: Annotated[int, msgspec.Meta(ge=1)] = 1_000_000
    # Chunks embedded (and upserted) together during ingestion.
    embed_batch_size: Annotated[int, msgspec.Meta(ge=1)] = 64
    # The largest top_k a search may ask for.
    max_top_k: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1000
    # Folder of the embedded vector store ([drivers] vectors = "embedded"); empty:
    # <server.data_dir>/vectors.
    embedded_path: str = ""
    # A search whose selected rows times the dimension is at most this is scored exactly
    # in float32; above it an int8 pass picks the candidates (rescored exactly).
    embedded_exact_max_values: Annotated[int, msgspec.Meta(ge=0)] = 4_000_000
    # Folder of the qdrant-local store ([drivers] vectors = "qdrant-local"); empty:
    # <server.data_dir>/qdrant.
    qdrant_path: str = ""
    # The Qdrant server of the qdrant driver (REST); a secret, as it may hold credentials.
    qdrant_url: Secret = Secret("http://127.0.0.1:6333")
    # Its API key; empty: none. Written {env = "QDRANT_API_KEY"}.
    qdrant_api_key: Secret = Secret("")
    # Seconds a request to the Qdrant server may take.
    qdrant_timeout_s: Annotated[int, msgspec.Meta(ge=1)] = 10
