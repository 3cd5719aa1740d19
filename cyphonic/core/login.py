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


class SignedRequest:
    """A request to the AS signed by the sender's identity, with its
    certificate, a fresh nonce and an ephemeral X25519 key (Login Request,
    Node Information Request). The AS answers signed over that nonce, the
    payload sealed under the login key of both ephemerals, or refuses with
    a signed Login Reject."""

    REQUEST = ""  # message types, and the request's schema
    RESPONSE = ""
    SCHEMA = None
    RESPONSE_SCHEMA = None

    def __init__(self, identity: crypto.Identity, certificate: bytes, ca_public: bytes, now: float) -> None:
        self.txid = secrets.randbits(32)
        self.ca_public = ca_public
        self.nonce = secrets.token_bytes(16)
        self._ephemeral = crypto.Ephemeral()
        body = build(
            self.SCHEMA,
            dict(
                header=dict(type=self.REQUEST, txid=self.txid),
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
            and data[0] in (TYPE[self.RESPONSE], TYPE["LoginReject"])
            and (int.from_bytes(data[2:6], "big") == self.txid)
        )

    def opened(self, data: bytes, now: float) -> bytes:
        """The sealed payload of the AS's answer, or LoginRefused /
        AuthenticationError / ParseError."""
        refused = data[:1] != bytes([TYPE[self.RESPONSE]])
        msg = parse(wire.LoginReject if refused else self.RESPONSE_SCHEMA, data)
        try:
            crypto.verify_certificate(bytes(msg.certificate), self.ca_public, now, role="authority")
        except AuthenticationError as exc:
            raise AuthenticationError(f"AS certificate: {exc.reason}") from None
        as_cert = parse(crypto.wire_cert.Certificate, bytes(msg.certificate)).body.value
        crypto.verify_signature(bytes(as_cert.sign_key), self.nonce + data[:-64], bytes(msg.signature))
        if refused:
            raise LoginRefused(str(msg.reason))
        key = crypto.login_key(self._ephemeral.agree(bytes(msg.ephemeral)), self.nonce)
        return crypto.open_sealed(key, bytes(msg.sealed))


class LoginClient(SignedRequest):
    REQUEST, RESPONSE = "LoginRequest", "LoginResponse"
    SCHEMA, RESPONSE_SCHEMA = wire.LoginRequest, wire.LoginResponse

    def accept(self, data: bytes, now: float) -> Grant:
        """The grant, or LoginRefused / AuthenticationError / ParseError."""
        grant = parse(wire.LoginGrant, self.opened(data, now))
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
