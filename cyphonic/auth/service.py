"""The AS's logic, sans I/O (seed: "Authentication process").

A node proves who it is with its certificate and a signature over a fresh
request; the AS answers with the FQDN, the virtual IPs it assigned (kept in
SQLite), an MN–NMS session key and a ticket the NMS can open. The grant is
sealed under a key from both sides' ephemeral X25519 keys, and the whole
answer is signed by the AS, whose certificate the same CA issued.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Callable

from cyphonic import crypto
from cyphonic.drops import Drops
from cyphonic.errors import AuthenticationError, ParseError
from cyphonic.store import PoolExhausted, Store
from cyphonic.wire import signaling as wire
from cyphonic.wire.common import TYPE, build, parse

log = logging.getLogger("cyphonic.auth")

# A login request must be this fresh; with the nonce cache below it bounds replays.
MAX_SKEW = 300.0
REPLY_CACHE = 4096

REASONS = {
    "unknown CA": "unknown_ca",
    "expired": "expired",
    "not yet valid": "not_yet_valid",
    "revoked": "revoked",
    "bad signature": "bad_signature",
    "wrong role": "wrong_role",
    "stale request": "stale",
    "outside the domain": "wrong_role",
    "virtual IP pool exhausted": "pool_exhausted",
}


class AuthenticationService:
    def __init__(
        self,
        *,
        identity: crypto.Identity,
        certificate: bytes,
        ca_public: bytes,
        store: Store,
        domain: str,
        nms_key: bytes,
        revoked: Callable[[], frozenset[int]],
        ticket_lifetime: int = 86400,
    ) -> None:
        self.identity = identity
        self.certificate = certificate
        self.ca_public = ca_public
        self.store = store
        self.domain = domain
        self.nms_key = nms_key
        self.revoked = revoked
        self.ticket_lifetime = ticket_lifetime
        self.drops = Drops(log)
        self.logins = 0
        self.refusals = 0
        self._replies: OrderedDict[bytes, bytes] = OrderedDict()

    def receive(self, data: bytes, source: tuple[str, int], now: float) -> bytes | None:
        """The reply to send back to `source`, or None (dropped)."""
        if not data or data[0] != TYPE["LoginRequest"]:
            self.drops("not a login request", source)
            return None
        try:
            request = parse(wire.LoginRequest, data)
        except ParseError as exc:
            self.drops("malformed login request", source, str(exc).splitlines()[0])
            return None
        cached = self._replies.get(bytes(request.nonce))
        if cached is not None:
            return cached  # a retransmission: same answer, no new session
        try:
            reply = self._login(request, data, source, now)
        except AuthenticationError as exc:
            self.refusals += 1
            self.drops("login refused", source, exc.reason, per_detail=True)
            return self._reject(request, exc.reason)
        self._replies[bytes(request.nonce)] = reply
        while len(self._replies) > REPLY_CACHE:
            self._replies.popitem(last=False)
        return reply

    def _login(self, request, data: bytes, source, now: float) -> bytes:
        cert = crypto.verify_certificate(bytes(request.certificate), self.ca_public, now, self.revoked())
        if str(cert.role) not in ("node", "adapter"):
            raise AuthenticationError("wrong role")
        if not cert.fqdn.endswith("." + self.domain):
            raise AuthenticationError("outside the domain")
        crypto.verify_signature(bytes(cert.sign_key), data[:-64], bytes(request.signature))
        if abs(now - request.timestamp) > MAX_SKEW:
            raise AuthenticationError("stale request")
        try:
            enrollment = self.store.enroll(cert.fqdn, cert.serial, bytes(cert.sign_key), now)
        except PoolExhausted:
            raise AuthenticationError("virtual IP pool exhausted") from None

        session_key = crypto.random_key()
        expires = int(now) + self.ticket_lifetime
        ticket = crypto.seal(
            self.nms_key,
            build(
                wire.Ticket,
                dict(
                    fqdn=cert.fqdn,
                    vip4=enrollment.vip4.packed,
                    vip6=enrollment.vip6.packed,
                    session_key=session_key,
                    expires=expires,
                ),
            ),
        )
        grant = build(
            wire.LoginGrant,
            dict(
                fqdn=cert.fqdn,
                vip4=enrollment.vip4.packed,
                vip6=enrollment.vip6.packed,
                vip4_prefix=self.store.pool4.prefixlen,
                vip6_prefix=self.store.pool6.prefixlen,
                session_key=session_key,
                ticket=ticket,
                expires=expires,
            ),
        )
        ephemeral = crypto.Ephemeral()
        key = crypto.login_key(ephemeral.agree(bytes(request.ephemeral)), bytes(request.nonce))
        body = build(
            wire.LoginResponse,
            dict(
                header=dict(type="LoginResponse", txid=request.header.txid),
                certificate=self.certificate,
                ephemeral=ephemeral.public,
                sealed=crypto.seal(key, grant),
                signature=bytes(64),
            ),
        )[:-64]
        self.logins += 1
        log.info(
            "login %s from %s: vip4 %s vip6 %s", cert.fqdn, source, enrollment.vip4, enrollment.vip6
        )
        return body + self.identity.sign(bytes(request.nonce) + body)

    def _reject(self, request, reason: str) -> bytes:
        body = build(
            wire.LoginReject,
            dict(
                header=dict(type="LoginReject", txid=request.header.txid),
                reason=REASONS.get(reason, "malformed"),
                certificate=self.certificate,
                signature=bytes(64),
            ),
        )[:-64]
        return body + self.identity.sign(bytes(request.nonce) + body)
