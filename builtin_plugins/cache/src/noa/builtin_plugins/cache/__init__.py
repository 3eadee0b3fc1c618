"""NOA cache plugin: the cache slot's drivers and the tiered cache (no side effects on import)."""
