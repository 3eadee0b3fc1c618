"""The client's address: the TCP peer, or what a trusted proxy says the client was.

``X-Forwarded-For`` and ``Forwarded`` are believed only when the peer is a configured
trusted proxy; then the chain is read from the right (the hops nearest to us), skipping
trusted proxies, and the first address that is not one is the client. Anything a client
wrote further left is never believed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["ClientAddress"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip().strip('"')
    if text.startswith("["):  # Forwarded: for="[2001:db8::1]:4711"
        text = text[1 : text.find("]")]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _forwarded_for(value: str) -> list[str]:
    """The ``for=`` values of a ``Forwarded`` header (RFC 7239), in order."""
    found = []
    for element in value.split(","):
        for pair in element.split(";"):
            name, _, item = pair.partition("=")
            if name.strip().lower() == "for":
                found.append(item)
    return found


class ClientAddress:
    """Resolves the client address of a request from its peer and headers."""

    __slots__ = ("networks",)

    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        # Raises ValueError naming a malformed entry; the plugin reports it as config.
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in trusted_proxies
        )

    def trusted(self, address: str | None) -> bool:
        if not self.networks or address is None:
            return False
        parsed = _address(address)
        return parsed is not None and any(parsed in net for net in self.networks)

    def resolve(self, peer: str | None, headers: list[tuple[bytes, bytes]]) -> str | None:
        """The client address (as text), or the peer's when it is not a trusted proxy."""
        if not self.trusted(peer):
            return peer
        chain: list[str] = []
        for name, value in headers:
            if name == b"x-forwarded-for":
                chain.extend(value.decode("latin-1").split(","))
            elif name == b"forwarded":
                chain.extend(_forwarded_for(value.decode("latin-1")))
        for hop in reversed(chain):
            parsed = _address(hop)
            if parsed is None:
                # An unparseable hop ("unknown", garbage): stop believing the chain.
                return peer
            if not any(parsed in net for net in self.networks):
                return str(parsed)
        return peer
