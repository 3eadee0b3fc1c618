"""The ``[hello]`` config section."""

from __future__ import annotations

from noa.plugin_sdk import PluginConfig


class HelloConfig(PluginConfig, frozen=True):
    # The word put before the name.
    greeting: str = "Hello"
    # Set false to see /ready turn 503 with the hello check failing.
    ready: bool = True
