"""IPv6 Neighbor Discovery for the adapter's LAN port, sans I/O (DESIGN section 4).

The adapter is the general nodes' router: its Router Advertisements send
them to DHCPv6 for addresses and other configuration (M=1, O=1) and mark
the prefix on-link without SLAAC, and its `NeighborProxy` answers Neighbor
Solicitations for peer addresses (and its own link-local) with its MAC, so
their packets come to it and into a tunnel (RFC 4861, RFC 8106).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from ipaddress import IPv6Address, IPv6Network
from typing import Any

from cyphonic.core.frames import ETHERNET, TTL, Buffer, icmp6_packet, ip_packet, l4_checksum_ok
from cyphonic.errors import ParseError
from cyphonic.wire.common import build
from cyphonic.wire.lan import (
    ALL_NODES_MAC,
    ETH_P_IPV6,
    IPV6_HLEN,
    ND_HOP_LIMIT,
    ND_NEIGHBOR_ADVERT,
    ND_NEIGHBOR_SOLICIT,
    ND_ROUTER_ADVERT,
    ND_ROUTER_SOLICIT,
    OPT_MTU,
    OPT_PREFIX_INFO,
    OPT_RDNSS,
    OPT_SOURCE_LL,
    OPT_TARGET_LL,
    PROTO_ICMPV6,
    Icmp6,
    PrefixInformation,
)

ALL_NODES = IPv6Address("ff02::1")
UNSPECIFIED = bytes(16)
SOLICITED_NODE = IPv6Address("ff02::1:ff00:0").packed[:13]  # RFC 4291 2.7.1: ff02::1:ff00:0/104
MAX_RTR_ADV_INTERVAL = 600  # RFC 4861 6.2.1 default
VALID_LIFETIME, PREFERRED_LIFETIME = 2_592_000, 604_800  # RFC 4861 6.2.1 AdvValidLifetime/AdvPreferredLifetime
RDNSS_LIFETIME = 3 * MAX_RTR_ADV_INTERVAL  # RFC 8106 5.1: at least 3 x MaxRtrAdvInterval
RS_LEN, NS_LEN = 8, 24  # ICMP bytes before the options (RFC 4861 4.1, 4.3)
# wire.lan.Icmp6 holding a NeighborAdvertisement with one target link-layer address option
NA = struct.Struct("!BBHI16sBB6s")
NA_ROUTER, NA_SOLICITED, NA_OVERRIDE = 1 << 31, 1 << 30, 1 << 29
# the shortest body the schema accepts for an option type, where longer than 6 bytes
_MIN_BODY = {OPT_PREFIX_INFO: PrefixInformation.sizeof()}


def link_local(mac: bytes) -> IPv6Address:
    """fe80::/64 with the modified EUI-64 of `mac` (RFC 4291 2.5.1, appendix A:
    ff:fe in the middle, the universal/local bit inverted)."""
    if len(mac) != 6:
        raise ValueError("an Ethernet MAC has 6 bytes")
    interface_id = bytes([mac[0] ^ 0x02]) + bytes(mac[1:3]) + b"\xff\xfe" + bytes(mac[3:6])
    return IPv6Address(b"\xfe\x80" + bytes(6) + interface_id)


def _option(kind: int, body: Any, length: int) -> dict:
    return {"type": kind, "length": length, "body": body}


def router_advertisement(
    mac: bytes,
    prefix: IPv6Network,
    mtu: int,
    dns: IPv6Address | None,
    dst_mac: bytes = ALL_NODES_MAC,
    dst_ip: IPv6Address = ALL_NODES,
    router_lifetime: int = 3 * MAX_RTR_ADV_INTERVAL,
) -> bytes:
    """An Ethernet frame with a Router Advertisement (RFC 4861 4.2) from
    `link_local(mac)`: addresses from DHCPv6 (M=1, O=1), `prefix` on-link
    but not for SLAAC (L=1, A=0), the link MTU, and the DNS server (RFC 8106)."""
    options = [
        _option(OPT_SOURCE_LL, bytes(mac), 1),
        _option(OPT_MTU, {"reserved": 0, "mtu": mtu}, 1),
        _option(
            OPT_PREFIX_INFO,
            {
                "prefix_length": prefix.prefixlen,
                "flags": {"on_link": True, "autonomous": False, "reserved": 0},
                "valid_lifetime": VALID_LIFETIME,
                "preferred_lifetime": PREFERRED_LIFETIME,
                "reserved": 0,
                "prefix": prefix.network_address.packed,
            },
            4,
        ),
    ]
    if dns is not None:
        options.append(_option(OPT_RDNSS, {"reserved": 0, "lifetime": RDNSS_LIFETIME, "servers": [dns.packed]}, 3))
    message = build(
        Icmp6,
        {
            "type": ND_ROUTER_ADVERT,
            "code": 0,
            "checksum": 0,
            "body": {
                "cur_hop_limit": TTL,
                "flags": {"managed": True, "other": True, "reserved": 0},
                "router_lifetime": router_lifetime,
                "reachable_time": 0,  # 0: unspecified by this router (RFC 4861 4.2)
                "retrans_timer": 0,
                "options": options,
            },
        },
    )
    ip = icmp6_packet(link_local(mac).packed, dst_ip.packed, message, ND_HOP_LIMIT)
    return ETHERNET.pack(dst_mac, mac, ETH_P_IPV6) + ip


def _options(data: memoryview) -> list[tuple[int, memoryview]]:
    """(type, body) of each ND option in `data`, as `wire.lan.NdpOptions`
    followed by the end of the message reads them (RFC 4861 4.6)."""
    options, at = [], 0
    while at < len(data):  # each option is at least 8 bytes: bounded
        if len(data) - at < 2 or data[at + 1] == 0:
            raise ParseError("truncated or zero-length ND option")
        kind, end = data[at], at + data[at + 1] * 8
        if end > len(data) or end - at - 2 < _MIN_BODY.get(kind, 0):
            raise ParseError("ND option beyond the message or too short for its type")
        options.append((kind, data[at + 2 : end]))
        at = end
    return options


def _nd_message(frame: Buffer, kind: int, fixed: int) -> tuple[memoryview, list[tuple[int, memoryview]]] | None:
    """(IPv6 packet, options) of an ND message of type `kind` (`fixed` bytes
    before its options) that passes RFC 4861's validity checks common to RS
    and NS (6.1.1, 7.1.1); None for other IPv6 traffic; ParseError if it is
    `kind` but invalid. `struct` and slices, not construct: it runs per frame."""
    version, packet, _ = ip_packet(frame)
    if version != 6:
        raise ParseError("not an IPv6 frame")
    if packet[6] != PROTO_ICMPV6 or len(packet) <= IPV6_HLEN or packet[IPV6_HLEN] != kind:
        return None
    if len(packet) < IPV6_HLEN + fixed:
        raise ParseError("truncated ND message")
    if packet[7] != ND_HOP_LIMIT:
        raise ParseError("ND message not from on-link (hop limit is not 255)")
    if packet[IPV6_HLEN + 1] != 0:
        raise ParseError("ND message with a nonzero code")
    if not l4_checksum_ok(packet, IPV6_HLEN, PROTO_ICMPV6):
        raise ParseError("bad ICMPv6 checksum")
    options = _options(packet[IPV6_HLEN + fixed :])
    if packet[8:24] == UNSPECIFIED and any(k == OPT_SOURCE_LL for k, _ in options):
        raise ParseError("source link-layer address option from the unspecified address")
    return packet, options


def is_router_solicitation(frame: Buffer) -> bool:
    """A valid Router Solicitation (RFC 4861 6.1.1); never raises."""
    try:
        return _nd_message(frame, ND_ROUTER_SOLICIT, RS_LEN) is not None
    except ParseError:
        return False


class NeighborProxy:
    """Answers Neighbor Solicitations for the targets `answer_for` accepts,
    and for the adapter's own link-local address (the general nodes' router).

    `processed` counts valid solicitations seen, `answered` the adverts made.
    """

    def __init__(self, mac: bytes) -> None:
        self.mac = bytes(mac)
        self.address = link_local(self.mac)
        self.processed = 0
        self.answered = 0

    def answer(self, frame: Buffer, answer_for: Callable[[bytes], bool]) -> bytes | None:
        """The Neighbor Advertisement frame answering the NS in `frame`
        (RFC 4861 7.2.4), or None; ParseError if the NS is invalid."""
        found = _nd_message(frame, ND_NEIGHBOR_SOLICIT, NS_LEN)
        if found is None:
            return None
        packet, options = found
        target = bytes(packet[IPV6_HLEN + 8 : IPV6_HLEN + 24])
        src, dst = bytes(packet[8:24]), bytes(packet[24:40])
        if target[0] == 0xFF:
            raise ParseError("multicast target")
        dad = src == UNSPECIFIED
        if dad and dst[:13] != SOLICITED_NODE:
            raise ParseError("DAD probe not to a solicited-node address")
        self.processed += 1
        if target != self.address.packed and not answer_for(target):
            return None
        self.answered += 1
        if dad:
            # 7.2.4: a DAD probe is answered to all nodes, not solicited.
            dst_mac, dst_ip, solicited = ALL_NODES_MAC, ALL_NODES.packed, False
        else:
            source_ll = [bytes(body[:6]) for k, body in options if k == OPT_SOURCE_LL]
            dst_mac, dst_ip, solicited = (source_ll or [bytes(frame[6:12])])[0], src, True
        return self._advertisement(target, dst_mac, dst_ip, solicited)

    def _advertisement(self, target: bytes, dst_mac: bytes, dst_ip: bytes, solicited: bool) -> bytes:
        # R=1: the adapter is the general nodes' router; O=1: it is the only
        # one on the link for these addresses, so its answer wins.
        flags = NA_ROUTER | NA_OVERRIDE | (NA_SOLICITED if solicited else 0)
        message = NA.pack(ND_NEIGHBOR_ADVERT, 0, 0, flags, target, OPT_TARGET_LL, 1, self.mac)
        ip = icmp6_packet(self.address.packed, dst_ip, message, ND_HOP_LIMIT)
        return ETHERNET.pack(dst_mac, self.mac, ETH_P_IPV6) + ip
