"""pytest plugin of the NOA test kit (registered through the ``pytest11`` entry point).

Fixture ``noa_boot``: an async context manager factory, see
:func:`noa.plugin_sdk.testing.harness.boot`::

    async def test_my_route(noa_boot):
        async with noa_boot(["http", "my_plugin"]) as noa:
            response = await noa.client.get("/v1/my")
            assert response.status_code == 200
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def noa_boot() -> Any:
    from noa.plugin_sdk.testing.harness import boot

    return boot
