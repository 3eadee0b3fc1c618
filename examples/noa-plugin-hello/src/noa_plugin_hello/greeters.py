"""Drivers for the ``greeter`` slot. Exactly one is loaded, chosen by ``[drivers] greeter``."""

from __future__ import annotations


class PlainGreeter:
    def greet(self, greeting: str, name: str) -> str:
        return f"{greeting}, {name}!"


class ShoutingGreeter:
    def greet(self, greeting: str, name: str) -> str:
        return f"{greeting}, {name}!".upper()
