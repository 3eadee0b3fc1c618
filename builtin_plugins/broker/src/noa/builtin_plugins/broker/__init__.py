"""NOA broker plugin: the broker slot's drivers (no side effects on import)."""
