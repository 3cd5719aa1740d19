"""The adapter's side of "Get General Node information", sans I/O (seed:
the adapter authenticates to the AS, registers with the NMS, then gets its
general nodes from the AS).

The request is built and signed like a Login Request, with the adapter's
own certificate; the answer is checked like a Login Response and its sealed
list opened under the same login key.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cyphonic.core.login import LoginRefused, SignedRequest
from cyphonic.wire import signaling as wire
from cyphonic.wire.common import parse

__all__ = ["GeneralNodeInfo", "LoginRefused", "NodeInformationClient"]


@dataclass(frozen=True)
class GeneralNodeInfo:
    """One general node the adapter serves, as the AS lists it."""

    mac: bytes  # 6 bytes
    fqdn: str
    ipv6: bool  # serve it IPv6 too (RA, DHCPv6)
    vip4: ipaddress.IPv4Address
    vip6: ipaddress.IPv6Address


class NodeInformationClient(SignedRequest):
    REQUEST, RESPONSE = "NodeInformationRequest", "NodeInformationResponse"
    SCHEMA, RESPONSE_SCHEMA = wire.NodeInformationRequest, wire.NodeInformationResponse

    def accept(self, data: bytes, now: float) -> list[GeneralNodeInfo]:
        """The adapter's general nodes, or LoginRefused / AuthenticationError / ParseError."""
        body = parse(wire.NodeInformationBody, self.opened(data, now))
        return [
            GeneralNodeInfo(
                mac=bytes(node.mac),
                fqdn=node.fqdn,
                ipv6=bool(node.ipv6),
                vip4=ipaddress.IPv4Address(bytes(node.vip4)),
                vip6=ipaddress.IPv6Address(bytes(node.vip6)),
            )
            for node in body.nodes
        ]
