"""The AS's logic, sans I/O (seed: "Authentication process").

A node proves who it is with its certificate and a signature over a fresh
request; the AS answers with the FQDN, the virtual IPs it assigned (kept in
SQLite), an MN–NMS session key and a ticket the NMS can open. The grant is
sealed under a key from both sides' ephemeral X25519 keys, and the whole
answer is signed by the AS, whose certificate the same CA issued.

An adapter asks for the general nodes it serves the same way (seed:
"Sequence of Get General Node information"): a Node Information Request is
built, checked and answered like a Login Request, and the list comes back
sealed like the grant.
"""

from __future__ import annotations

import ipaddress
import logging
import sqlite3
from collections import Counter, OrderedDict
from collections.abc import Callable

from cyphonic import crypto
from cyphonic.core.budget import Budgets
from cyphonic.core.freshness import MAX_SKEW, Freshness
from cyphonic.drops import Drops
from cyphonic.errors import AuthenticationError, CyphonicError, ParseError
from cyphonic.store import PoolExhausted, Store
from cyphonic.wire import signaling as wire
from cyphonic.wire.common import TYPE, build, parse

log = logging.getLogger("cyphonic.auth")

Address = tuple[str, int]
Outgoing = list[tuple[bytes, Address]]

# A node retransmits a Login Request for about 6 s: within this time the
# same source gets the same answer again (no second session); a replay from
# anywhere else, or later, gets nothing.
REPLY_TTL = 10.0
# the virtual IPv6 of a general node enrolled without IPv6: none (::)
NO_VIP6 = bytes(16)
REPLY_CACHE = 4096
# Each Login Request costs two Ed25519 verifications before anything about
# it is known. An address may cause this many per second (a burst of logins
# from one adapter or NAPT fits the burst), all sources together the global one.
VERIFY_PER_SOURCE = (20.0, 50.0)
VERIFY_GLOBAL = (500.0, 1000.0)

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
    "unavailable": "unavailable",
}


class Unavailable(CyphonicError):
    """The AS cannot decide a login now (revocation list or database):
    the node is told so, signed, and retries; nobody is let in meanwhile."""


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
        self.node_informations = 0
        self.refusals = 0
        # ("login" or "node information", "granted" or the reject reason), for the metrics
        self.results: Counter[tuple[str, str]] = Counter()
        self._replies: OrderedDict[bytes, tuple[Address, float, bytes]] = OrderedDict()
        self._nonces = Freshness(MAX_SKEW)
        self._per_source = Budgets(*VERIFY_PER_SOURCE)
        self._global = Budgets(*VERIFY_GLOBAL, keys=1)

    def receive(self, data: bytes, source: Address, now: float) -> Outgoing:
        """The reply to send back to `source` (none: dropped)."""
        reply = self._answer(data, source, now)
        return [(reply, source)] if reply is not None else []

    def _answer(self, data: bytes, source: Address, now: float) -> bytes | None:
        kind = data[0] if data else None
        if kind == TYPE["LoginRequest"]:
            what, schema, decide = "login", wire.LoginRequest, self._login
        elif kind == TYPE["NodeInformationRequest"]:
            what, schema, decide = "node information", wire.NodeInformationRequest, self._node_information
        else:
            self.drops("not an AS request", source)
            return None
        try:
            request = parse(schema, data)
        except ParseError as exc:
            self.drops(f"malformed {what} request", source, str(exc).splitlines()[0])
            return None
        nonce = bytes(request.nonce)
        key = data[:1] + nonce
        cached = self._replies.get(key)
        if cached is not None and cached[0] == source and now - cached[1] < REPLY_TTL:
            return cached[2]  # a retransmission: same answer, no new session
        if cached is not None or self._nonces.seen(nonce):
            self.drops(f"replayed {what} request", source)
            return None
        if not (self._per_source.take(source[0], now) and self._global.take(None, now)):
            self.drops("verification budget exhausted", source)
            return None
        try:
            reply = decide(request, data, source, now)
        except ParseError as exc:  # e.g. a certificate field that is no certificate
            self.drops(f"malformed {what} request", source, str(exc).splitlines()[0])
            return None
        except AuthenticationError as exc:
            self.refusals += 1
            self.results[(what, REASONS.get(exc.reason, "malformed"))] += 1
            self.drops(f"{what} refused", source, exc.reason, per_detail=True)
            reply = self._reject(request, exc.reason)
            if len(reply) > len(data):
                # never more bytes to an unproven source than it sent us
                self.drops("refusal larger than the request", source)
                return None
        except Unavailable as exc:
            self.refusals += 1
            self.results[(what, "unavailable")] += 1
            log.error("%s from %s not decided: %s", what, source, exc)
            reply = self._reject(request, "unavailable")
        else:
            self.results[(what, "granted")] += 1
        self._replies[key] = (source, now, reply)
        while len(self._replies) > REPLY_CACHE:
            self._replies.popitem(last=False)
        return reply

    # -- time -------------------------------------------------------------------

    def next_timer(self) -> float | None:
        """When the oldest cached reply may be forgotten."""
        for _, at, _ in self._replies.values():
            return at + REPLY_TTL
        return None

    def handle_timer(self, now: float) -> Outgoing:
        replies = self._replies
        while replies:
            _, (_, at, _) = next(iter(replies.items()))
            if now - at < REPLY_TTL:  # due at exactly at + REPLY_TTL (next_timer)
                break
            replies.popitem(last=False)
        return []

    def _authenticate(self, request, data: bytes, now: float):
        """The certificate of a Login or Node Information Request whose
        certificate, signature, freshness, serial and domain check out."""
        cert = crypto.verify_certificate(bytes(request.certificate), self.ca_public, now)
        crypto.verify_signature(bytes(cert.sign_key), data[:-64], bytes(request.signature))
        why = self._nonces.refuse(bytes(request.nonce), request.timestamp, now)
        if why is not None:
            raise AuthenticationError("stale request")
        try:
            revoked = self.revoked()
        except (CyphonicError, OSError, ValueError) as exc:
            raise Unavailable(f"revocation list unreadable, refusing every login until it is fixed: {exc}") from None
        if cert.serial in revoked:
            raise AuthenticationError("revoked")
        if not cert.fqdn.endswith("." + self.domain):
            raise AuthenticationError("outside the domain")
        return cert

    def _ipv6_of(self, cert) -> bool:
        """Whether the certificate's holder gets a virtual IPv6 (a general
        node only if enrolled with IPv6); AuthenticationError for a role
        that may not log in."""
        role = str(cert.role)
        if role in ("node", "adapter"):
            return True
        if role != "general":
            raise AuthenticationError("wrong role")
        # A general node's certificate is good only while an adapter serves
        # it: removing it from its adapter locks it out, as does revoking it.
        try:
            node = self.store.general_node_by_fqdn(cert.fqdn)
        except sqlite3.Error as exc:
            raise Unavailable(f"database: {exc}") from None
        if node is None:
            raise AuthenticationError("wrong role")
        return node.ipv6

    def _login(self, request, data: bytes, source: Address, now: float) -> bytes:
        cert = self._authenticate(request, data, now)
        ipv6 = self._ipv6_of(cert)
        try:
            enrollment = self.store.enroll(cert.fqdn, cert.serial, bytes(cert.sign_key), now)
        except PoolExhausted:
            raise AuthenticationError("virtual IP pool exhausted") from None
        except sqlite3.Error as exc:
            raise Unavailable(f"database: {exc}") from None

        # an IPv4-only general node: peers get no AAAA for it (protocols/adapter.md)
        vip6 = enrollment.vip6.packed if ipv6 else NO_VIP6
        session_key = crypto.random_key()
        # a ticket never outlives the certificate it was issued for
        expires = min(int(now) + self.ticket_lifetime, int(cert.not_after))
        ticket = crypto.seal(
            self.nms_key,
            build(
                wire.Ticket,
                dict(
                    fqdn=cert.fqdn,
                    vip4=enrollment.vip4.packed,
                    vip6=vip6,
                    session_key=session_key,
                    expires=expires,
                    serial=cert.serial,
                    issued=int(now * 1_000_000),
                ),
            ),
        )
        grant = build(
            wire.LoginGrant,
            dict(
                fqdn=cert.fqdn,
                vip4=enrollment.vip4.packed,
                vip6=vip6,
                vip4_prefix=self.store.pool4.prefixlen,
                vip6_prefix=self.store.pool6.prefixlen,
                session_key=session_key,
                ticket=ticket,
                expires=expires,
            ),
        )
        self.logins += 1
        log.info("login %s from %s: vip4 %s vip6 %s", cert.fqdn, source, enrollment.vip4, ipaddress.IPv6Address(vip6))
        return self._sealed_answer("LoginResponse", wire.LoginResponse, request, grant)

    def _node_information(self, request, data: bytes, source: Address, now: float) -> bytes:
        """The general nodes of the adapter that asks, with their virtual
        IPs (assigned now if they have none yet), for its DHCP leases."""
        cert = self._authenticate(request, data, now)
        if str(cert.role) != "adapter":
            raise AuthenticationError("wrong role")
        try:
            nodes = self.store.general_nodes(cert.fqdn)
            addresses = [self.store.reserve(node.fqdn, now) for node in nodes]
        except PoolExhausted:
            raise AuthenticationError("virtual IP pool exhausted") from None
        except sqlite3.Error as exc:
            raise Unavailable(f"database: {exc}") from None
        nodes_body = [
            dict(
                mac=bytes.fromhex(node.mac.replace(":", "")),
                fqdn=node.fqdn,
                ipv6=node.ipv6,
                vip4=enrollment.vip4.packed,
                vip6=enrollment.vip6.packed if node.ipv6 else NO_VIP6,
            )
            for node, enrollment in zip(nodes, addresses, strict=True)
        ]
        body = build(wire.NodeInformationBody, dict(nodes=nodes_body))
        self.node_informations += 1
        log.info("node information for %s from %s: %d general nodes", cert.fqdn, source, len(nodes))
        return self._sealed_answer("NodeInformationResponse", wire.NodeInformationResponse, request, body)

    def _sealed_answer(self, kind: str, schema, request, plaintext: bytes) -> bytes:
        """`plaintext` sealed under the login key of `request`'s ephemeral
        and a fresh one of ours; the answer signed over the request nonce."""
        ephemeral = crypto.Ephemeral()
        key = crypto.login_key(ephemeral.agree(bytes(request.ephemeral)), bytes(request.nonce))
        body = build(
            schema,
            dict(
                header=dict(type=kind, txid=request.header.txid),
                certificate=self.certificate,
                ephemeral=ephemeral.public,
                sealed=crypto.seal(key, plaintext),
                signature=bytes(64),
            ),
        )[:-64]
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
