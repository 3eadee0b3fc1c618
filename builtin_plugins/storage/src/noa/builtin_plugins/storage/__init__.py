"""NOA storage plugin: the storage slot's drivers (no side effects on import)."""
