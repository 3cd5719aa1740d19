"""The adapter's DHCPv6 server, sans I/O (RFC 8415 §16, §18.3).

Each general node enrolled with IPv6 has one virtual IPv6 address from the
cloud; this server assigns it in an IA_NA to the node's MAC (the frame's
source MAC, as for DHCPv4), with the DNS servers (RFC 3646) and domain
list. The driver sends each reply from our link-local address, port 547, to
the client's link-local source, port 546:

    server.receive(payload, src_mac, now)   -> [reply payload]   ParseError if malformed
    server.address_ready(mac, now)          -> [reply payload]
    server.expire(now)                      forget expired bindings
    server.next_event()                     LeaseGranted, LeaseReleased, LeaseDeclined, AddressNeeded
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import Any

from cyphonic.core.leases import (
    Event,
    Gate,
    LeaseDeclined,
    LeaseGranted,
    LeaseReleased,
)
from cyphonic.drops import Drops
from cyphonic.wire import dhcp6 as wire
from cyphonic.wire.common import build, parse

log = logging.getLogger("cyphonic.dhcp6")

Option = dict[str, Any]

# §16: which messages must name us, must not name any server, or may name us;
# all but Information-request must identify the client.
OURS, NONE, MAYBE = "ours", "none", "maybe"
SERVER_ID_RULE = {
    wire.SOLICIT: NONE,
    wire.REQUEST: OURS,
    wire.CONFIRM: NONE,
    wire.RENEW: OURS,
    wire.REBIND: NONE,
    wire.RELEASE: OURS,
    wire.DECLINE: OURS,
    wire.INFORMATION_REQUEST: MAYBE,
}
RELAYED = {bytes([wire.RELAY_FORW]), bytes([wire.RELAY_REPL])}
# Messages whose answer is the node's address: they wait for its login.
NEED_ADDRESS = {wire.SOLICIT, wire.REQUEST, wire.CONFIRM, wire.RENEW, wire.REBIND}


@dataclass(frozen=True)
class _Ia:
    iaid: int
    addresses: list[IPv6Address]


@dataclass(frozen=True)
class _Request:
    message: Any
    mac: bytes
    client_id: bytes | None
    ias: list[_Ia]  # the IA_NA options, in order
    rapid_commit: bool
    options: dict[int, list[bytes]]

    @property
    def kind(self) -> int:
        return int(self.message.msg_type)


class Dhcp6Server:
    def __init__(
        self,
        *,
        mac: bytes,
        dns: list[IPv6Address],
        domain_search: list[str],
        lifetime: int = 3600,
        address_of: Callable[[bytes], IPv6Address | None],
        known: Callable[[bytes], bool],
    ) -> None:
        self.duid = wire.duid_ll(mac)  # our server identifier
        self.lifetime = lifetime
        self.drops = Drops(log)
        self.counters: Counter[str] = Counter()
        self._events: deque[Event] = deque()
        self.gate: Gate[_Request, IPv6Address] = Gate(self.drops, self.counters, self._events, known, address_of)
        self.unknown, self.waiting = self.gate.unknown, self.gate.waiting
        self.bindings: dict[bytes, tuple[IPv6Address, float]] = {}  # MAC -> (address, expires)
        self._configuration: list[Option] = []
        if dns:
            servers = build(wire.DnsServers, {"servers": dns})
            self._configuration.append(wire.option(wire.DNS_SERVERS, servers))
        if domain_search:
            self._configuration.append(wire.option(wire.DOMAIN_LIST, wire.encode_domain_list(domain_search)))

    def receive(self, payload: bytes, src_mac: bytes, now: float) -> list[bytes]:
        """A DHCPv6 message from the LAN port, `src_mac` the frame's source; the reply payloads."""
        if payload[:1] in RELAYED:  # another layout (§9), and the adapter serves its own link only
            self.drops("relayed", src_mac.hex(":"))
            return []
        request = self._admit(parse(wire.Message, payload), src_mac)
        if request is None:
            return []
        if self.gate.stranger(src_mac):
            return []
        return self._handle(request, now)

    def address_ready(self, mac: bytes, now: float) -> list[bytes]:
        """`mac`'s identity logged in: answer the message held for it, if any."""
        return self.gate.ready(mac, now, self._handle)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def expire(self, now: float) -> None:
        for mac, (address, expires) in list(self.bindings.items()):
            if expires <= now:
                del self.bindings[mac]
                self._events.append(LeaseReleased(mac, address))
        self.waiting.expire(now)

    # --- checks (§16) -----------------------------------------------------------------

    def _admit(self, message: Any, src_mac: bytes) -> _Request | None:
        options = wire.options_of(message.options)
        # nested options are parsed here, so a malformed one is a ParseError for any MAC
        ias = [_ia(data) for data in options.get(wire.IA_NA, [])]
        client_id = options.get(wire.CLIENTID, [None])[0]
        server_id = options.get(wire.SERVERID, [None])[0]
        rule = SERVER_ID_RULE.get(message.msg_type)
        if rule is None:
            reason = "not a client message"
        elif client_id is None and message.msg_type != wire.INFORMATION_REQUEST:
            reason = "no client identifier"
        elif (rule == NONE and server_id is not None) or (rule == OURS and server_id is None):
            reason = "server identifier where RFC 8415 §16 forbids or needs one"
        elif server_id not in (None, self.duid):
            reason = "for another server"
        elif message.msg_type == wire.INFORMATION_REQUEST and (wire.IA_NA in options or wire.IA_TA in options):
            reason = "Information-request with an IA (§16.12)"
        else:
            reason = None
        if reason is not None:
            self.drops(reason, src_mac.hex(":"))
            return None
        return _Request(message, src_mac, client_id, ias, wire.RAPID_COMMIT in options, options)

    def _handle(self, request: _Request, now: float) -> list[bytes]:
        if request.kind == wire.INFORMATION_REQUEST:  # §18.3.6: configuration only
            self.counters["information-request"] += 1
            return [self._reply(request, wire.REPLY, [*self._configuration])]
        if request.kind in (wire.RELEASE, wire.DECLINE):
            return [self._give_back(request)]
        address = self.gate.address(request.mac, request, now)
        if address is None:
            return []
        if request.kind == wire.CONFIRM:
            return self._confirm(request, address)
        if request.kind == wire.SOLICIT and not (request.rapid_commit and request.ias):  # §18.3.1
            self.counters["advertise"] += 1
            return [self._reply(request, wire.ADVERTISE, self._assign(request, address))]
        # Request, Renew, Rebind (§18.3.2, §18.3.4, §18.3.5), or a Solicit with Rapid Commit (§18.3.1)
        assignment = self._assign(request, address)
        if request.ias:
            expires = now + self.lifetime
            self.bindings[request.mac] = (address, expires)
            self._events.append(LeaseGranted(request.mac, address, expires))
        self.counters["reply"] += 1
        if request.kind == wire.SOLICIT:
            assignment.insert(0, wire.option(wire.RAPID_COMMIT, b""))
        return [self._reply(request, wire.REPLY, assignment)]

    # --- answers (§18.3) --------------------------------------------------------------

    def _assign(self, request: _Request, address: IPv6Address) -> list[Option]:
        """The IA_NAs of the answer: the node's one address in the first; none
        left for the others (§21.4); addresses the client holds that are not its
        own get lifetimes of 0 when it renews or rebinds (§18.3.4)."""
        if not request.ias:
            return [_status(wire.NO_ADDRS_AVAIL, "ask for an IA_NA"), *self._configuration]
        t1, t2 = self.lifetime // 2, self.lifetime * 4 // 5
        out = []
        for index, ia in enumerate(request.ias):
            if index:
                out.append(_ia_na(ia.iaid, 0, 0, [_status(wire.NO_ADDRS_AVAIL, "one address per node")]))
                continue
            inner = [_iaaddr(address, self.lifetime)]
            if request.kind in (wire.RENEW, wire.REBIND):
                inner += [_iaaddr(old, 0) for old in ia.addresses if old != address]
            out.append(_ia_na(ia.iaid, t1, t2, inner))
        return out + self._configuration

    def _confirm(self, request: _Request, address: IPv6Address) -> list[bytes]:
        """§18.3.3: Success if every address the client names is its own, else
        NotOnLink; no reply at all when it names none."""
        named = [a for ia in request.ias for a in ia.addresses]
        if not named:
            self.drops("Confirm naming no address", request.mac.hex(":"))
            return []
        on_link = all(a == address for a in named)
        self.counters["confirm"] += 1
        status = _status(wire.SUCCESS, "") if on_link else _status(wire.NOT_ON_LINK, "not this node's address")
        return [self._reply(request, wire.REPLY, [status])]

    def _give_back(self, request: _Request) -> bytes:
        """Release (§18.3.7) or Decline (§18.3.8): the binding ends; an IA that
        names no address of this node's binding gets NoBinding."""
        bound = self.bindings.get(request.mac)
        answer = [_status(wire.SUCCESS, "")]
        for ia in request.ias:
            if bound is None or bound[0] not in ia.addresses:
                answer.append(_ia_na(ia.iaid, 0, 0, [_status(wire.NO_BINDING, "")]))
                continue
            del self.bindings[request.mac]
            if request.kind == wire.DECLINE:
                log.warning("%s declined %s: another host on the LAN uses it", request.mac.hex(":"), bound[0])
                self._events.append(LeaseDeclined(request.mac, bound[0]))
            else:
                self._events.append(LeaseReleased(request.mac, bound[0]))
            bound = None
        self.counters["decline" if request.kind == wire.DECLINE else "release"] += 1
        return self._reply(request, wire.REPLY, answer)

    def _reply(self, request: _Request, kind: int, options: list[Option]) -> bytes:
        head = [wire.option(wire.SERVERID, self.duid)]
        if request.client_id is not None:
            head.insert(0, wire.option(wire.CLIENTID, request.client_id))
        return build(
            wire.Message,
            {"msg_type": kind, "transaction_id": request.message.transaction_id, "options": head + options},
        )


def _ia(data: bytes) -> _Ia:
    ia = parse(wire.IaNa, data)
    inner = wire.options_of(ia.options).get(wire.IAADDR, [])
    return _Ia(ia.iaid, [parse(wire.IaAddress, raw).address for raw in inner])


def _ia_na(iaid: int, t1: int, t2: int, options: list[Option]) -> Option:
    return wire.option(wire.IA_NA, build(wire.IaNa, {"iaid": iaid, "t1": t1, "t2": t2, "options": options}))


def _iaaddr(address: IPv6Address, lifetime: int) -> Option:
    value = {"address": address, "preferred": lifetime, "valid": lifetime, "options": []}
    return wire.option(wire.IAADDR, build(wire.IaAddress, value))


def _status(code: int, message: str) -> Option:
    return wire.option(wire.STATUS_CODE, build(wire.StatusCode, {"status": code, "message": message}))
