"""NOA retrieval plugin: the embedded vector store, the default driver of the ``vectors``
slot (no side effects on import)."""
