"""The ``[retrieval]`` config section."""

from __future__ import annotations

from typing import Annotated, Literal

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
    # Bulk ingestion jobs: documents one job may carry, the request body size its route
    # accepts (instead of http.max_body_bytes), and how long a worker may take over one
    # part of 64 documents before the broker hands it to another.
    max_job_documents: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    max_job_bytes: Annotated[int, msgspec.Meta(ge=1)] = 64 * 1024 * 1024
    job_ack_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0
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
    # The PostgreSQL database of the pgvector driver ([drivers] vectors = "pgvector"); a
    # secret, as it may hold a password. Empty: storage.postgres_url.
    pgvector_url: Secret = Secret("")
    # The PostgreSQL schema holding its catalog and one table per collection.
    pgvector_schema: Annotated[str, msgspec.Meta(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] = (
        "noa_vectors"
    )
    # The vector index a new collection gets: "none" (every search is exact) or "hnsw"
    # (approximate, much faster on large collections; a filtered search that finds fewer
    # than top_k is rerun exactly).
    pgvector_index: Literal["none", "hnsw"] = "none"
    # hnsw: the candidate list of a search (hnsw.ef_search); larger: better recall, slower.
    # 400 keeps recall@10 >= 0.99 on the vectors contract's set (200: 0.993 to 0.995).
    pgvector_hnsw_ef_search: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 400
    # Most connections one process opens to the database.
    pgvector_pool_max_size: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
    # Seconds connecting or one statement may take before the call fails with 503.
    pgvector_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
