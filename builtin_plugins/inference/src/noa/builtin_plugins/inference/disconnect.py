"""Notice when an HTTP client goes away while its request waits for a batch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

__all__ = ["client_gone"]


@asynccontextmanager
async def client_gone(receive: Any) -> AsyncIterator[asyncio.Event]:
    """An event set when the client disconnects, watched until the block ends.

    ``receive`` is the ASGI receive callable; call this only after the request body has
    been read, when the next message the server sends is ``http.disconnect``.
    """
    gone = asyncio.Event()

    async def watch() -> None:
        while True:
            message = await receive()
            if message.get("type") == "http.disconnect":
                gone.set()
                return

    task = asyncio.get_running_loop().create_task(watch())
    try:
        yield gone
    finally:
        task.cancel()
