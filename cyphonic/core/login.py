"""The node's side of the authentication sequence, sans I/O."""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass

from cyphonic import crypto
from cyphonic.errors import AuthenticationError
from cyphonic.wire import signaling as wire
from cyphonic.wire.common import TYPE, build, parse


class LoginRefused(Exception):
    """The AS, verified by its signature, refused this node."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Grant:
    fqdn: str
    vip4: ipaddress.IPv4Address
    vip6: ipaddress.IPv6Address
    vip4_prefix: int
    vip6_prefix: int
    session_key: bytes
    ticket: bytes
    expires: int


class LoginClient:
    def __init__(self, identity: crypto.Identity, certificate: bytes, ca_public: bytes, now: float) -> None:
        self.txid = secrets.randbits(32)
        self.ca_public = ca_public
        self.nonce = secrets.token_bytes(16)
        self._ephemeral = crypto.Ephemeral()
        body = build(
            wire.LoginRequest,
            dict(
                header=dict(type="LoginRequest", txid=self.txid),
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
            and data[0] in (TYPE["LoginResponse"], TYPE["LoginReject"])
            and (int.from_bytes(data[2:6], "big") == self.txid)
        )

    def accept(self, data: bytes, now: float) -> Grant:
        """The grant, or LoginRefused / AuthenticationError / ParseError."""
        schema = wire.LoginResponse if data[0] == TYPE["LoginResponse"] else wire.LoginReject
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
        grant = parse(wire.LoginGrant, crypto.open_sealed(key, bytes(msg.sealed)))
        return Grant(
            fqdn=grant.fqdn,
            vip4=ipaddress.IPv4Address(bytes(grant.vip4)),
            vip6=ipaddress.IPv6Address(bytes(grant.vip6)),
            vip4_prefix=grant.vip4_prefix,
            vip6_prefix=grant.vip6_prefix,
            session_key=bytes(grant.session_key),
            ticket=bytes(grant.ticket),
            expires=grant.expires,
        )
