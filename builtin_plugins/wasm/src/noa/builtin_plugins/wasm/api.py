"""The WASM plugin API.

``GET /v1/wasm/plugins`` lists WASM plugins (loaded and failed) in detail: entries
with their schemas, folder, source, error code. The kernel's ``GET /v1/plugins`` (and
``noa plugins list``) lists them too, one summary row each with ``kind`` "wasm".
``POST /v1/plugins/{name}/invoke`` calls one (scope ``wasm:invoke``);
``POST /v1/admin/wasm/reload`` loads the plugin folder again (scope ``wasm:admin``).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, JSONBody
from noa.builtin_plugins.wasm.service import PluginView, WasmHost
from noa.plugin_sdk.auth import SCOPE_OPT

__all__ = ["ADMIN", "INVOKE", "wasm_handlers"]

INVOKE, ADMIN = "wasm:invoke", "wasm:admin"


class InvokeRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    entry: str
    input: Any = None


class InvokeResponse(msgspec.Struct, frozen=True, kw_only=True):
    plugin: str
    entry: str
    output: Any


class WasmPluginList(msgspec.Struct, frozen=True):
    object: str
    data: list[PluginView]


def wasm_handlers(wasm: WasmHost) -> list[HTTPRouteHandler]:
    tags = ["wasm"]

    @get("/v1/wasm/plugins", summary="List WASM plugins", tags=tags, opt={SCOPE_OPT: INVOKE})
    async def list_wasm() -> WasmPluginList:
        """Every WASM plugin folder: its manifest (entries with their schemas) when it
        loaded, its error code and cause when it did not."""
        return WasmPluginList(object="list", data=wasm.plugins())

    @post(
        "/v1/plugins/{name:str}/invoke",
        summary="Invoke a WASM plugin",
        tags=tags,
        status_code=200,
        opt={SCOPE_OPT: INVOKE},
    )
    async def invoke(name: FromPath[str], data: JSONBody[InvokeRequest]) -> InvokeResponse:
        """Run ``entry`` of WASM plugin ``name`` with ``input`` (checked against the
        entry's input schema, 422 ``wasm_invalid_input``) in a fresh sandbox. A failed
        call answers 502 with code ``wasm_trap``, ``wasm_memory_limit``,
        ``wasm_output_too_large``, ``wasm_bad_output`` or ``wasm_failed``, or 504
        ``wasm_timeout``."""
        output = await wasm.invoke(name, data.entry, data.input)
        return InvokeResponse(plugin=name, entry=data.entry, output=output)

    @post(
        "/v1/admin/wasm/reload",
        summary="Reload WASM plugins",
        tags=tags,
        status_code=200,
        opt={SCOPE_OPT: ADMIN},
    )
    async def reload() -> WasmPluginList:
        """Load the plugin folder again; answers the new list."""
        return WasmPluginList(object="list", data=await wasm.reload())

    return [list_wasm, invoke, reload]
