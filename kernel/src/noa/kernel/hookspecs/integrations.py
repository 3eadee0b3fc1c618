"""Integration hooks: outbound AI providers and event listeners."""

from __future__ import annotations

from typing import Any

from noa.plugin_sdk import Registry, hookspec


@hookspec
def noa_register_providers(providers: Registry[Any]) -> None:
    """Contribute AI providers (llama.cpp, OpenAI, Anthropic, any OpenAI-compatible
    upstream) for the provider router: ``providers.add("openai", provider)``.

    The router plugin defines the provider interface. Called once per worker at
    assembly. Returns nothing.
    """


@hookspec
def noa_register_event_listeners(listeners: Registry[Any]) -> None:
    """Contribute listeners for event-bus topics: ``listeners.add("audit-log", listener)``.

    The broker plugin subscribes each listener to the topics it names. Called once per
    worker at assembly. Returns nothing.
    """
