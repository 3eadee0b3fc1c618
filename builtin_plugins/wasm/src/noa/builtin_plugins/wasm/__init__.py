"""NOA wasm plugin: WASM plugins in a wasmtime sandbox (no side effects on import)."""
