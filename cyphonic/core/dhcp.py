"""The adapter's DHCPv4 server, sans I/O (RFC 2131, options RFC 2132).

Each general node is known by its MAC, and the cloud assigns it exactly one
virtual IPv4 address; this server leases that address to that MAC and to
no one else. It takes the UDP payload of a frame from the LAN port with the
frame's source MAC, and hands back `Reply`s for the driver to wrap in
Ethernet/IPv4/UDP (server_ip:67 to dst_ip:68):

    server.receive(payload, src_mac, now)   -> [Reply]   ParseError if malformed
    server.address_ready(mac, now)          -> [Reply]   answer the message held for `mac`
    server.expire(now)                      forget expired leases
    server.next_event()                     LeaseGranted, LeaseReleased, LeaseDeclined, AddressNeeded

Relayed messages (giaddr set) are dropped: the adapter serves its own LAN.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from cyphonic.core.leases import (
    HOLD,
    AddressNeeded,
    Event,
    Gate,
    Lease,
    LeaseDeclined,
    LeaseGranted,
    LeaseReleased,
    Leases,
)
from cyphonic.drops import Drops
from cyphonic.errors import ParseError
from cyphonic.wire import dhcp as wire
from cyphonic.wire.common import build, parse
from cyphonic.wire.dhcp import MessageType

__all__ = [
    "AddressNeeded",
    "DhcpServer",
    "Lease",
    "LeaseDeclined",
    "LeaseGranted",
    "LeaseReleased",
    "Leases",
    "Reply",
]

log = logging.getLogger("cyphonic.dhcp")

ZERO = IPv4Address(0)
LIMITED_BROADCAST = IPv4Address("255.255.255.255")
BROADCAST_MAC = b"\xff" * 6
CLIENT_MESSAGES = {
    MessageType.DISCOVER,
    MessageType.REQUEST,
    MessageType.DECLINE,
    MessageType.RELEASE,
    MessageType.INFORM,
}
DECLINE_MEMORY = 300.0  # RFC 2131 §4.3.3: the server marks a declined address for a while


@dataclass(frozen=True)
class Reply:
    payload: bytes
    dst_mac: bytes
    dst_ip: IPv4Address
    broadcast: bool


@dataclass(frozen=True)
class _Request:
    """A client message that passed the checks, with the options it was judged on."""

    message: Any
    mac: bytes
    kind: MessageType
    options: dict[int, bytes]
    requested: IPv4Address | None  # option 50
    server_id: IPv4Address | None  # option 54


class DhcpServer:
    def __init__(
        self,
        *,
        server_ip: IPv4Address,
        prefix_len: int,
        router: IPv4Address | None,
        dns: list[IPv4Address],
        domain_search: list[str],
        mtu: int,
        lease_time: int = 3600,
        leases: Leases,
        address_of: Callable[[bytes], IPv4Address | None],
        known: Callable[[bytes], bool],
    ) -> None:
        self.server_ip = server_ip
        self.lease_time = lease_time
        self.leases = leases
        self.drops = Drops(log)
        self.counters: Counter[str] = Counter()
        self._events: deque[Event] = deque()
        self.gate: Gate[_Request, IPv4Address] = Gate(self.drops, self.counters, self._events, known, address_of)
        self.unknown, self.waiting = self.gate.unknown, self.gate.waiting
        self._configured = _configuration(prefix_len, router, dns, domain_search, mtu)
        self._offers: dict[bytes, float] = {}
        self._declined: dict[bytes, float] = {}  # MAC -> until when its decline is remembered

    def receive(self, payload: bytes, src_mac: bytes, now: float) -> list[Reply]:
        """A DHCP message from the LAN port, `src_mac` the frame's source."""
        request = self._admit(parse(wire.Message, payload), src_mac)
        if request is None:
            return []
        if self.gate.stranger(request.mac):
            return []
        return self._handle(request, now)

    def address_ready(self, mac: bytes, now: float) -> list[Reply]:
        """`mac`'s identity logged in: answer the message held for it, if any."""
        return self.gate.ready(mac, now, self._handle)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def expire(self, now: float) -> None:
        for mac, lease in list(self.leases.items()):
            if lease.expires <= now:
                del self.leases[mac]
                log.info("lease of %s on %s expired", lease.address, mac.hex(":"))
                self._events.append(LeaseReleased(mac, lease.address))
        # what waits for a login, an offer and a decline are remembered for a while only
        self.waiting.expire(now)
        self._offers = {mac: since for mac, since in self._offers.items() if now - since <= HOLD}
        self._declined = {mac: until for mac, until in self._declined.items() if until > now}

    # --- checks (RFC 2131 §4.1, §4.3) ---------------------------------------------------

    def _admit(self, message: Any, src_mac: bytes) -> _Request | None:
        options = wire.options_of(message)
        kind = options.get(wire.MESSAGE_TYPE)
        if kind is not None and len(kind) != 1:
            raise ParseError(f"message type of {len(kind)} octets")
        reason = _refusal(message, src_mac, kind)
        if reason is not None:
            self.drops(reason, src_mac.hex(":"))
            return None
        assert kind is not None
        requested, server_id = options.get(wire.REQUESTED_IP), options.get(wire.SERVER_ID)
        return _Request(
            message,
            src_mac,
            MessageType(kind[0]),
            options,
            None if requested is None else wire.address(requested),
            None if server_id is None else wire.address(server_id),
        )

    def _handle(self, request: _Request, now: float) -> list[Reply]:
        if request.kind == MessageType.RELEASE:
            self._release(request)
            return []
        if request.kind == MessageType.DECLINE:
            self._decline(request, now)
            return []
        if request.kind == MessageType.INFORM:  # §4.3.5: configuration only, no lease to check
            self.counters["inform"] += 1
            return [self._reply(request, MessageType.ACK, ZERO, lease=False)]
        address = self.gate.address(request.mac, request, now)
        if address is None:
            return []
        if request.kind == MessageType.DISCOVER:
            return [self._offer(request, address, now)]
        return self._request(request, address, now)

    # --- the messages (RFC 2131 §4.3.1 - §4.3.4) ----------------------------------------

    def _offer(self, request: _Request, address: IPv4Address, now: float) -> Reply:
        if request.mac in self._declined:
            # The address is the node's own and cannot change, so it is offered again.
            log.warning("offering %s to %s again, which declined it: is another host using it?", address, _t(request))
        self._offers[request.mac] = now
        self.counters["offer"] += 1
        return self._reply(request, MessageType.OFFER, address, lease=True)

    def _request(self, request: _Request, address: IPv4Address, now: float) -> list[Reply]:
        ciaddr = request.message.ciaddr
        if request.server_id is not None:  # SELECTING
            if request.server_id != self.server_ip:
                self._offers.pop(request.mac, None)  # it chose another server's offer
                self.counters["chose another server"] += 1
                return []
            wanted = request.requested
        elif request.requested is not None:  # INIT-REBOOT
            wanted = request.requested
        elif ciaddr != ZERO:  # RENEWING (unicast) or REBINDING (broadcast)
            wanted = ciaddr
        else:
            self.drops("REQUEST naming no address", _t(request))
            return []
        if wanted != address:
            log.info("NAK to %s: it asked for %s, its address is %s", _t(request), wanted, address)
            self.counters["nak"] += 1
            return [self._reply(request, MessageType.NAK, ZERO, lease=False)]
        expires = now + self.lease_time
        self.leases[request.mac] = Lease(address, expires)
        self._offers.pop(request.mac, None)
        self._events.append(LeaseGranted(request.mac, address, expires))
        self.counters["ack"] += 1
        return [self._reply(request, MessageType.ACK, address, lease=True)]

    def _release(self, request: _Request) -> None:
        lease = self.leases.get(request.mac)
        if request.server_id not in (None, self.server_ip):
            self.drops("RELEASE for another server", _t(request))
        elif lease is None or lease.address != request.message.ciaddr:
            self.drops("RELEASE of no lease", _t(request))
        else:
            del self.leases[request.mac]
            self.counters["release"] += 1
            self._events.append(LeaseReleased(request.mac, lease.address))

    def _decline(self, request: _Request, now: float) -> None:
        declined = request.requested
        if request.server_id not in (None, self.server_ip) or declined is None:
            self.drops("DECLINE not for us", _t(request))
            return
        log.warning("%s declined %s: another host on the LAN answers ARP for it", _t(request), declined)
        self._declined[request.mac] = now + DECLINE_MEMORY
        self.counters["decline"] += 1
        lease = self.leases.get(request.mac)
        if lease is not None and lease.address == declined:
            del self.leases[request.mac]
        self._events.append(LeaseDeclined(request.mac, declined))

    # --- replies (RFC 2131 §4.1, §4.3.1 table 3) -----------------------------------------

    def _reply(self, request: _Request, kind: MessageType, yiaddr: IPv4Address, *, lease: bool) -> Reply:
        message = request.message
        head: list[tuple[int, bytes]] = [(wire.MESSAGE_TYPE, bytes([kind])), (wire.SERVER_ID, self.server_ip.packed)]
        if lease:
            t = self.lease_time
            head += [
                (wire.LEASE_TIME, _u32(t)),
                (wire.RENEWAL_TIME, _u32(t // 2)),
                (wire.REBINDING_TIME, _u32(t * 7 // 8)),
            ]
        if kind == MessageType.NAK:  # table 3: a message (56) may say why
            head.append((wire.MESSAGE, b"not the address of this client"))
        if wire.CLIENT_ID in request.options:  # RFC 6842 §3: echoed in every reply
            head.append((wire.CLIENT_ID, request.options[wire.CLIENT_ID]))
        asked = list(dict.fromkeys(request.options.get(wire.PARAMETER_REQUEST_LIST, b"")))
        wanted = [c for c in asked if c in self._configured]
        extra = [c for c in self._configured if c not in wanted]
        # A NAK carries no configuration (table 3); an ACK to INFORM ciaddr keeps the client's address.
        ciaddr = message.ciaddr if kind == MessageType.ACK else ZERO
        limit = _max_size(request.options)
        while True:
            config = [] if kind == MessageType.NAK else [(c, self._configured[c]) for c in wanted + extra]
            payload = build(wire.Message, _bootreply(message, ciaddr, yiaddr, head + config))
            # Too long for the client: what it did not ask for goes first, then its last wishes.
            if len(payload) <= limit or not (extra or wanted):
                break
            (extra or wanted).pop()
        payload += bytes(max(0, wire.MIN_MESSAGE - len(payload)))
        # §4.1: to ciaddr if the client has one, else by broadcast if it asks
        # (or has no address yet to be reached at), else to yiaddr; a NAK is always broadcast.
        if kind != MessageType.NAK and message.ciaddr != ZERO:
            return Reply(payload, request.mac, message.ciaddr, False)
        if kind == MessageType.NAK or message.flags & wire.BROADCAST or yiaddr == ZERO:
            return Reply(payload, BROADCAST_MAC, LIMITED_BROADCAST, True)
        return Reply(payload, request.mac, yiaddr, False)


def _refusal(message: Any, src_mac: bytes, kind: bytes | None) -> str | None:
    """Why a message is not for this server, if it is not."""
    if message.op != wire.BOOTREQUEST:
        return "not a BOOTREQUEST"
    if message.giaddr != ZERO:
        return "relayed"
    if message.htype != wire.HTYPE_ETHERNET or message.hlen != 6:
        return "not Ethernet"
    if bytes(message.chaddr[:6]) != src_mac:  # chaddr decides the lease: it must be the sender's
        return "chaddr is not the source MAC"
    if kind is None:
        return "BOOTP (no message type)"
    if kind[0] not in CLIENT_MESSAGES:
        return "not a client message type"
    return None


def _bootreply(message: Any, ciaddr: IPv4Address, yiaddr: IPv4Address, options: list[tuple[int, bytes]]) -> dict:
    """A BOOTREPLY's fields: xid, flags and chaddr from the client (table 3)."""
    return dict(
        op=wire.BOOTREPLY, htype=message.htype, hlen=message.hlen, hops=0, xid=message.xid, secs=0,
        flags=message.flags, ciaddr=ciaddr, yiaddr=yiaddr, siaddr=ZERO, giaddr=ZERO, chaddr=message.chaddr,
        sname=bytes(64), file=bytes(128), options=wire.option_list(options), padding=b"",
    )  # fmt: skip


def _configuration(
    prefix_len: int, router: IPv4Address | None, dns: list[IPv4Address], search: list[str], mtu: int
) -> dict[int, bytes]:
    """The configuration options (RFC 2132), in the order sent unasked."""
    options = {wire.SUBNET_MASK: IPv4Network(f"0.0.0.0/{prefix_len}").netmask.packed}
    if router is not None:
        options[wire.ROUTER] = router.packed
    if dns:
        options[wire.DNS_SERVERS] = b"".join(a.packed for a in dns)
    if search:
        options[wire.DOMAIN_NAME] = search[0].encode("ascii")
    options[wire.INTERFACE_MTU] = mtu.to_bytes(2, "big")
    if search:
        options[wire.DOMAIN_SEARCH] = wire.encode_domain_search(search)
    return options


def _max_size(options: dict[int, bytes]) -> int:
    """The longest DHCP message the client takes: option 57 counts the IP and
    UDP headers (RFC 2132 §9.10), and no client takes less than 576."""
    data = options.get(wire.MAX_MESSAGE_SIZE, b"")
    size = int.from_bytes(data, "big") if len(data) == 2 else 0
    return max(size, 576) - 28


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def _t(request: _Request) -> str:
    return request.mac.hex(":")
