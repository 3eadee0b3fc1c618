"""noa-plugin-hello: an example third-party NOA plugin (no side effects on import)."""
