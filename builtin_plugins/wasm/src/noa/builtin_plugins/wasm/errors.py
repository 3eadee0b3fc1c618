"""The errors of WASM plugins: one load error, and one API error per way a call fails.

::

    NoaError
    ├── WasmLoadError             a plugin's manifest or module can't be loaded (code)
    └── ApiError
        ├── WasmCallError (502)   the plugin's call failed
        │   ├── wasm_trap             the module trapped (unreachable, out of bounds ...)
        │   ├── wasm_memory_limit     it failed at its memory cap
        │   ├── wasm_output_too_large stdout past max_output_bytes
        │   ├── wasm_bad_output       stdout not JSON, or not matching the output schema
        │   └── wasm_failed           a non-zero exit code (stderr's tail in the message)
        ├── WasmTimeout (504)     wasm_timeout: out of fuel or past its time limit
        ├── Unprocessable (422)   wasm_invalid_input: input failing the entry's schema
        └── NotFound (404)        wasm_plugin_not_found, wasm_entry_not_found
"""

from __future__ import annotations

from noa.plugin_sdk import ApiError, GatewayTimeout, NoaError

__all__ = ["WasmCallError", "WasmLoadError", "WasmTimeout"]


class WasmLoadError(NoaError):
    """A WASM plugin can't be loaded; ``code`` says why (``wasm_manifest_invalid`` ...)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class WasmCallError(ApiError):
    """A call into a WASM plugin failed; the server and other plugins carry on."""

    status_code = 502
    error_type = "plugin_error"


class WasmTimeout(GatewayTimeout):
    """A call ran out of fuel or past its wall-clock limit."""
