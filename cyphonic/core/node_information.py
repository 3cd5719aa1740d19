"""The adapter's side of "Get General Node information", sans I/O (seed:
the adapter authenticates to the AS, registers with the NMS, then gets its
general nodes from the AS).

The request is built and signed like a Login Request, with the adapter's
own certificate; the answer is checked like a Login Response and its sealed
list opened under the same login key.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass

from cyphonic import crypto
from cyphonic.core.login import LoginRefused
from cyphonic.errors import AuthenticationError
from cyphonic.wire import signaling as wire
from cyphonic.wire.common import TYPE, build, parse

__all__ = ["GeneralNodeInfo", "LoginRefused", "NodeInformationClient"]


@dataclass(frozen=True)
class GeneralNodeInfo:
    """One general node the adapter serves, as the AS lists it."""

    mac: bytes  # 6 bytes
    fqdn: str
    ipv6: bool  # serve it IPv6 too (RA, DHCPv6)
    vip4: ipaddress.IPv4Address
    vip6: ipaddress.IPv6Address


class NodeInformationClient:
    def __init__(self, identity: crypto.Identity, certificate: bytes, ca_public: bytes, now: float) -> None:
        self.txid = secrets.randbits(32)
        self.ca_public = ca_public
        self.nonce = secrets.token_bytes(16)
        self._ephemeral = crypto.Ephemeral()
        body = build(
            wire.NodeInformationRequest,
            dict(
                header=dict(type="NodeInformationRequest", txid=self.txid),
                certificate=certificate,
                nonce=self.nonce,
                timestamp=int(now),
                ephemeral=self._ephemeral.public,
                signature=bytes(64),
            ),
        )[:-64]
        self.request = body + identity.sign(body)

    def matches(self, data: bytes) -> bool:
        return (
            len(data) >= 6
            and data[0] in (TYPE["NodeInformationResponse"], TYPE["LoginReject"])
            and (int.from_bytes(data[2:6], "big") == self.txid)
        )

    def accept(self, data: bytes, now: float) -> list[GeneralNodeInfo]:
        """The adapter's general nodes, or LoginRefused / AuthenticationError / ParseError."""
        schema = (
            wire.NodeInformationResponse if data[:1] == bytes([TYPE["NodeInformationResponse"]]) else wire.LoginReject
        )
        msg = parse(schema, data)
        try:
            crypto.verify_certificate(bytes(msg.certificate), self.ca_public, now, role="authority")
        except AuthenticationError as exc:
            raise AuthenticationError(f"AS certificate: {exc.reason}") from None
        as_cert = parse(crypto.wire_cert.Certificate, bytes(msg.certificate)).body.value
        crypto.verify_signature(bytes(as_cert.sign_key), self.nonce + data[:-64], bytes(msg.signature))
        if schema is wire.LoginReject:
            raise LoginRefused(str(msg.reason))
        key = crypto.login_key(self._ephemeral.agree(bytes(msg.ephemeral)), self.nonce)
        body = parse(wire.NodeInformationBody, crypto.open_sealed(key, bytes(msg.sealed)))
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
