"""NOA audit plugin: audit events from the broker into the database (no side effects on import)."""
