"""CYPHONIC Resolver Module (seed): answers A/AAAA for `<name>.<domain>`
with the peer's virtual IP once route selection and tunnel establishment
are done, and forwards every other name to the configured upstream."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import trio

from cyphonic.drops import Drops
from cyphonic.errors import AuthenticationError, ParseError
from cyphonic.node.errors import RouteError, UnknownPeer

log = logging.getLogger("cyphonic.resolver")

MAX_INFLIGHT = 64
ROUTE_TIMEOUT = 8.0
UPSTREAM_TIMEOUT = 3.0


class ResolverModule:
    def __init__(
        self,
        domain: str,
        signaling,
        listen,
        upstream,
        ttl: int,
        route_timeout: float = ROUTE_TIMEOUT,
        *,
        neighbours: Callable[[str], Any] | None = None,
        early: bool = False,
    ) -> None:
        self.domain = domain.lower().rstrip(".")
        self.route_timeout = route_timeout
        # names answered here without route selection (the adapter: the
        # general nodes on its own LAN, switched locally)
        self.neighbours = neighbours
        # answer once the NMS has named the path, not after the tunnel is
        # up (the adapter holds the first packets until it is)
        self.early = early
        self.signaling = signaling
        self.listen = listen
        self.upstream = upstream
        self.ttl = ttl
        self.drops = Drops(log)
        self.answered = 0
        self._limit = trio.CapacityLimiter(MAX_INFLIGHT)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        family = socket.AF_INET6 if ":" in self.listen[0] else socket.AF_INET
        sock = trio.socket.socket(family, socket.SOCK_DGRAM)
        await sock.bind(self.listen)
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                data, source = await sock.recvfrom(4096)
                token = object()  # one borrower per query, not per client
                try:
                    self._limit.acquire_on_behalf_of_nowait(token)
                except trio.WouldBlock:
                    self.drops("too many queries in flight", source)
                    continue
                nursery.start_soon(self._serve, sock, data, source, token)

    async def _serve(self, sock, data: bytes, source, token: object) -> None:
        try:
            reply = await self.answer(data)
            if reply is not None:
                await sock.sendto(reply, source)
                self.answered += 1
        except OSError as exc:
            self.drops("cannot answer", source, str(exc))
        except (ParseError, AuthenticationError) as exc:
            self.drops("query failed", source, str(exc).splitlines()[0])
        finally:
            self._limit.release_on_behalf_of(token)

    async def answer(self, data: bytes) -> bytes | None:
        try:
            query = dns.message.from_wire(data)
        except (dns.exception.DNSException, ValueError) as exc:
            self.drops("malformed DNS query", None, type(exc).__name__)
            return None
        if query.flags & dns.flags.QR or len(query.question) != 1:
            self.drops("not a single-question query")
            return None
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        if name == self.domain or name.endswith("." + self.domain):
            return (await self._overlay(query, question, name)).to_wire()
        return await self._forward(query, data)

    async def _overlay(self, query, question, fqdn: str):
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA | dns.flags.RA
        if question.rdtype not in (dns.rdatatype.A, dns.rdatatype.AAAA):
            return response  # the name may exist; it has no such record
        try:
            neighbour = self.neighbours(fqdn) if self.neighbours is not None else None
            if fqdn == self.signaling.grant.fqdn:
                peer = self.signaling.me
            elif neighbour is not None:
                peer = neighbour
            else:
                with trio.fail_after(self.route_timeout):
                    peer = await self.signaling.route_to(fqdn, early=self.early)
        except UnknownPeer:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response
        except (RouteError, TimeoutError, trio.TooSlowError) as exc:
            log.warning("no route to %s: %s", fqdn, exc)
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        address = peer.vip4 if question.rdtype == dns.rdatatype.A else peer.vip6
        if address.is_unspecified:  # a general node enrolled without IPv6: no AAAA
            return response
        rdtype = "A" if question.rdtype == dns.rdatatype.A else "AAAA"
        response.answer.append(dns.rrset.from_text(question.name, self.ttl, "IN", rdtype, str(address)))
        return response

    async def _forward(self, query, data: bytes) -> bytes | None:
        for server in self.upstream:
            family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
            with trio.socket.socket(family, socket.SOCK_DGRAM) as sock:
                await sock.connect(server)
                await sock.send(data)
                with trio.move_on_after(UPSTREAM_TIMEOUT):
                    while True:
                        reply = await sock.recv(65535)
                        if reply[:2] == data[:2]:
                            return reply
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.REFUSED if not self.upstream else dns.rcode.SERVFAIL)
        return response.to_wire()
