"""Ethernet frames of the adapter's LAN port, sans I/O (DESIGN section 4).

Pure functions on bytes: take the UDP datagrams (DHCP, DNS) out of a frame,
build the replies, answer pings, tell a stock device its path MTU (ICMP
"fragmentation needed", ICMPv6 "packet too big") and clamp the MSS of TCP
SYNs, so a general node never black-holes behind the tunnel's smaller MTU.
The layouts are those of `cyphonic.wire.lan`, packed with `struct` because
every function here runs per frame; the tests check both agree.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from cyphonic.core.checksum import checksum, fold, ones_sum, pseudo_header_sum
from cyphonic.errors import ParseError
from cyphonic.wire.lan import (
    ETH_HLEN,
    ETH_P_IP,
    ETH_P_IPV6,
    ICMP6_ECHO_REPLY,
    ICMP6_ECHO_REQUEST,
    ICMP6_PACKET_TOO_BIG,
    ICMP_DEST_UNREACH,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMP_FRAG_NEEDED,
    ICMP_HLEN,
    IPV4_HLEN,
    IPV6_HLEN,
    IPV6_MIN_MTU,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    UDP_HLEN,
)

Buffer = bytes | bytearray | memoryview
IPAddress = IPv4Address | IPv6Address

ETHERNET = struct.Struct("!6s6sH")
IPV4 = struct.Struct("!BBHHHBBH4s4s")  # wire.lan.IPv4Header without options
IPV6 = struct.Struct("!IHBB16s16s")  # wire.lan.IPv6Header
UDP = struct.Struct("!HHHH")  # wire.lan.UdpHeader
ICMP = struct.Struct("!BBHI")  # type, code, checksum, the 4-byte rest of wire.lan.Icmp
DF, MF, OFFSET = 0x4000, 0x2000, 0x1FFF
TTL = 64
ICMP4_ERROR_MAX = 576  # RFC 1812 4.3.2.3: an ICMP error datagram fits 576 bytes
TOS_INTERNETWORK_CONTROL = 0xC0  # RFC 1812 4.3.2.5: precedence 6 for ICMP errors
MSS_OPTION = 2  # RFC 9293 3.2


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    """One UDP datagram from the LAN, with the addresses that carried it."""

    src_mac: bytes
    dst_mac: bytes
    src_ip: IPAddress
    dst_ip: IPAddress
    sport: int
    dport: int
    payload: bytes
    version: int


# --- reading ---------------------------------------------------------------------------------


def ip_packet(frame: Buffer) -> tuple[int, memoryview, int]:
    """(IP version, the IP packet without Ethernet padding, its header length)
    of an untagged IPv4/IPv6 frame, lengths and IPv4 header checksum checked."""
    if len(frame) < ETH_HLEN:
        raise ParseError("frame shorter than an Ethernet header")
    ethertype = (frame[12] << 8) | frame[13]
    view = memoryview(frame)[ETH_HLEN:]
    if ethertype == ETH_P_IP:
        if len(view) < IPV4_HLEN or view[0] >> 4 != 4:
            raise ParseError("not an IPv4 header")
        ihl = (view[0] & 0x0F) * 4
        total = (view[2] << 8) | view[3]
        if ihl < IPV4_HLEN or total < ihl or total > len(view):
            raise ParseError("bad IPv4 header or total length")
        if ones_sum(view[:ihl]) != 0xFFFF:
            raise ParseError("bad IPv4 header checksum")
        return 4, view[:total], ihl
    if ethertype == ETH_P_IPV6:
        if len(view) < IPV6_HLEN or view[0] >> 4 != 6:
            raise ParseError("not an IPv6 header")
        total = IPV6_HLEN + ((view[4] << 8) | view[5])
        if total > len(view):  # a zero payload length (jumbogram) has no room for UDP: refused below
            raise ParseError("IPv6 payload length beyond the frame")
        return 6, view[:total], IPV6_HLEN
    raise ParseError(f"ethertype {ethertype:#06x} is not IPv4/IPv6 (VLAN-tagged frames are not ours)")


def _is_fragment(packet: Buffer) -> bool:
    flags_offset = (packet[6] << 8) | packet[7]
    return bool(flags_offset & (MF | OFFSET))


def l4_checksum_ok(packet: Buffer, l3: int, proto: int) -> bool:
    """The TCP/UDP/ICMPv6 checksum of `packet[l3:]` verifies (pseudo-header included)."""
    segment = packet[l3:]
    return fold(pseudo_header_sum(packet, len(segment), proto), ones_sum(segment)) == 0xFFFF


def parse_udp(frame: Buffer, verify_checksum: bool = True) -> UdpDatagram:
    """The UDP datagram in an Ethernet frame; ParseError for anything else.

    `verify_checksum=False` when the kernel reports the checksum as partial
    (offloaded): the field then holds only the pseudo-header sum.
    """
    version, packet, l3 = ip_packet(frame)
    proto = packet[9] if version == 4 else packet[6]
    if proto != PROTO_UDP:
        raise ParseError("not UDP (IPv6 extension headers are not accepted)")
    if version == 4 and _is_fragment(packet):
        raise ParseError("IPv4 fragment")
    if len(packet) < l3 + UDP_HLEN:
        raise ParseError("truncated UDP header")
    sport, dport, length, field = UDP.unpack_from(packet, l3)
    # Longer IP payload than UDP length: the rest is not ours (as Linux trims it).
    if length < UDP_HLEN or l3 + length > len(packet):
        raise ParseError("bad UDP length")
    packet = packet[: l3 + length]
    if verify_checksum:
        if version == 6 and field == 0:
            raise ParseError("zero UDP checksum over IPv6")  # RFC 8200 section 8.1
        if field != 0 and not l4_checksum_ok(packet, l3, PROTO_UDP):
            raise ParseError("bad UDP checksum")
    src, dst = (packet[12:16], packet[16:20]) if version == 4 else (packet[8:24], packet[24:40])
    return UdpDatagram(
        src_mac=bytes(frame[6:12]),
        dst_mac=bytes(frame[0:6]),
        src_ip=ipaddress.ip_address(bytes(src)),
        dst_ip=ipaddress.ip_address(bytes(dst)),
        sport=sport,
        dport=dport,
        payload=bytes(packet[l3 + UDP_HLEN :]),
        version=version,
    )


# --- building --------------------------------------------------------------------------------


def _ipv4(src: bytes, dst: bytes, proto: int, body: Buffer, ttl: int = TTL, tos: int = 0) -> bytes:
    # DF and identification 0: an atomic datagram (RFC 6864 section 4.1).
    header = bytearray(IPV4.pack(0x45, tos, IPV4_HLEN + len(body), 0, DF, ttl, proto, 0, src, dst))
    struct.pack_into("!H", header, 10, checksum(header))
    return bytes(header) + bytes(body)


def _ipv6(src: bytes, dst: bytes, proto: int, body: Buffer, hop_limit: int = TTL) -> bytes:
    return IPV6.pack(6 << 28, len(body), proto, hop_limit, src, dst) + bytes(body)


def _with_l4_checksum(packet: bytes, l3: int, proto: int, offset: int) -> bytes:
    """`packet` with the L4 checksum at `l3 + offset` filled in (RFC 768:
    a computed 0 is sent as 0xFFFF, 0 meaning "none" for UDP)."""
    out = bytearray(packet)
    value = ~fold(pseudo_header_sum(out, len(out) - l3, proto), ones_sum(memoryview(out)[l3:])) & 0xFFFF
    struct.pack_into("!H", out, l3 + offset, value or 0xFFFF)
    return bytes(out)


def icmp6_packet(src: bytes, dst: bytes, message: Buffer, hop_limit: int = TTL) -> bytes:
    """An IPv6 packet carrying the ICMPv6 `message`, its checksum filled in
    (RFC 4443 2.3: the pseudo-header is included)."""
    return _with_l4_checksum(_ipv6(src, dst, PROTO_ICMPV6, message, hop_limit), IPV6_HLEN, PROTO_ICMPV6, 2)


def udp_frame(
    src_mac: bytes,
    dst_mac: bytes,
    src_ip: IPAddress,
    dst_ip: IPAddress,
    sport: int,
    dport: int,
    payload: Buffer,
    ttl: int = TTL,
) -> bytes:
    """An Ethernet frame carrying one UDP datagram, checksums complete."""
    if src_ip.version != dst_ip.version:
        raise ValueError("source and destination of different IP versions")
    datagram = UDP.pack(sport, dport, UDP_HLEN + len(payload), 0) + bytes(payload)
    if src_ip.version == 4:
        packet = _ipv4(src_ip.packed, dst_ip.packed, PROTO_UDP, datagram, ttl)
        ethertype, l3 = ETH_P_IP, IPV4_HLEN
    else:
        packet = _ipv6(src_ip.packed, dst_ip.packed, PROTO_UDP, datagram, ttl)
        ethertype, l3 = ETH_P_IPV6, IPV6_HLEN
    return ETHERNET.pack(dst_mac, src_mac, ethertype) + _with_l4_checksum(packet, l3, PROTO_UDP, 6)


def icmp_frag_needed(src_mac: bytes, dst_mac: bytes, router_ip: IPv4Address, packet: Buffer, mtu: int) -> bytes:
    """ICMP "fragmentation needed and DF set" (RFC 792, RFC 1191 section 4)
    from `router_ip` to the source of `packet` (an IPv4 packet), quoting as
    much of it as keeps the ICMP datagram within 576 bytes (RFC 1812 4.3.2.3)."""
    if not 0 <= mtu <= 0xFFFF:
        raise ValueError("the next-hop MTU field has 16 bits")
    if len(packet) < IPV4_HLEN or packet[0] >> 4 != 4 or (packet[0] & 0x0F) < 5:
        raise ParseError("not an IPv4 packet")
    quote = bytes(packet[: ICMP4_ERROR_MAX - IPV4_HLEN - ICMP_HLEN])
    message = bytearray(ICMP.pack(ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, 0, mtu) + quote)
    struct.pack_into("!H", message, 2, checksum(message))
    ip = _ipv4(router_ip.packed, bytes(packet[12:16]), PROTO_ICMP, message, tos=TOS_INTERNETWORK_CONTROL)
    return ETHERNET.pack(dst_mac, src_mac, ETH_P_IP) + ip


def icmp6_packet_too_big(src_mac: bytes, dst_mac: bytes, src_ip: IPv6Address, packet: Buffer, mtu: int) -> bytes:
    """ICMPv6 Packet Too Big (RFC 4443 3.2) to the source of `packet` (an
    IPv6 packet), quoting as much of it as fits the minimum MTU of 1280."""
    if len(packet) < IPV6_HLEN or packet[0] >> 4 != 6:
        raise ParseError("not an IPv6 packet")
    quote = bytes(packet[: IPV6_MIN_MTU - IPV6_HLEN - ICMP_HLEN])
    message = ICMP.pack(ICMP6_PACKET_TOO_BIG, 0, 0, mtu) + quote
    ip = icmp6_packet(src_ip.packed, bytes(packet[8:24]), message)
    return ETHERNET.pack(dst_mac, src_mac, ETH_P_IPV6) + ip


def echo_reply(frame: Buffer, my_mac: bytes) -> bytes | None:
    """The answer to an ICMP/ICMPv6 echo request (RFC 792, RFC 4443 4.2):
    addresses and MACs swapped, identifier, sequence and data echoed.

    None for anything but an echo request to a unicast address (a ping to a
    group is not ours to answer: RFC 1122 3.2.2.6 lets a host ignore it) or
    an IPv4 fragment (never reassembled here); ParseError if malformed.
    IPv4 options are not copied back (RFC 1122 3.2.2.6 only says SHOULD)."""
    version, packet, l3 = ip_packet(frame)
    if version == 4:
        if packet[9] != PROTO_ICMP or _is_fragment(packet):
            return None
        message = packet[l3:]
        if len(message) < ICMP_HLEN:
            raise ParseError("truncated ICMP header")
        if message[0] != ICMP_ECHO_REQUEST or message[1] != 0:
            return None
        if ones_sum(message) != 0xFFFF:
            raise ParseError("bad ICMP checksum")
        src, dst = bytes(packet[12:16]), bytes(packet[16:20])
        if IPv4Address(dst).is_multicast or dst == b"\xff" * 4:
            return None
        reply = bytearray(message)
        reply[0], reply[2:4] = ICMP_ECHO_REPLY, b"\0\0"
        struct.pack_into("!H", reply, 2, checksum(reply))
        ip = _ipv4(dst, src, PROTO_ICMP, reply)
        return ETHERNET.pack(bytes(frame[6:12]), my_mac, ETH_P_IP) + ip
    if packet[6] != PROTO_ICMPV6:
        return None
    if len(packet) < l3 + ICMP_HLEN:
        raise ParseError("truncated ICMPv6 header")
    if packet[l3] != ICMP6_ECHO_REQUEST or packet[l3 + 1] != 0:
        return None
    if not l4_checksum_ok(packet, l3, PROTO_ICMPV6):
        raise ParseError("bad ICMPv6 checksum")
    src, dst = bytes(packet[8:24]), bytes(packet[24:40])
    if dst[0] == 0xFF:
        return None
    reply = bytearray(packet[l3:])
    reply[0], reply[2:4] = ICMP6_ECHO_REPLY, b"\0\0"
    ip = icmp6_packet(dst, src, reply)
    return ETHERNET.pack(bytes(frame[6:12]), my_mac, ETH_P_IPV6) + ip


# --- TCP MSS clamping ------------------------------------------------------------------------


def _tcp_offset(packet: Buffer) -> int | None:
    """Where the TCP header of an unfragmented IPv4/IPv6 packet starts, if it is TCP."""
    if len(packet) < IPV4_HLEN:
        return None
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        if ihl < IPV4_HLEN or packet[9] != PROTO_TCP or (((packet[6] << 8) | packet[7]) & OFFSET):
            return None
        return ihl
    if version == 6 and len(packet) >= IPV6_HLEN and packet[6] == PROTO_TCP:
        return IPV6_HLEN
    return None


def clamp_mss(packet: bytearray | memoryview, mss: int, partial: bool) -> bool:
    """Lower the MSS option of a TCP SYN (or SYN-ACK) in `packet` (an IP
    packet) to `mss`, in place; True if it changed. Unless `partial` (the
    checksum field then holds only the pseudo-header sum), the TCP checksum
    is updated incrementally (RFC 1624 eqn. 3). Never raises on any bytes."""
    tcp = _tcp_offset(packet)
    if tcp is None or len(packet) < tcp + 20 or not packet[tcp + 13] & 0x02:  # SYN
        return False
    end = min(tcp + (packet[tcp + 12] >> 4) * 4, len(packet))
    at = tcp + 20
    while at < end:  # each step advances at least one byte: bounded by 40 options bytes
        kind = packet[at]
        if kind == 0:  # end of option list
            return False
        if kind == 1:  # no-operation
            at += 1
            continue
        if at + 1 >= end or packet[at + 1] < 2:
            return False  # truncated or malformed option list: leave it alone
        length = packet[at + 1]
        if kind == MSS_OPTION and length == 4 and at + 4 <= end:
            return _rewrite_mss(packet, tcp, at + 2, mss, partial)
        at += length
    return False


def _rewrite_mss(packet: bytearray | memoryview, tcp: int, field: int, mss: int, partial: bool) -> bool:
    if (packet[field] << 8) | packet[field + 1] <= mss:
        return False
    # The option may sit at an odd offset: sum the 16-bit-aligned words it
    # touches before and after (TCP starts 4-byte aligned in the packet).
    start, stop = field & ~1, (field + 3) & ~1
    old = ones_sum(packet[start:stop])
    struct.pack_into("!H", packet, field, mss)
    if not partial:
        stored = (packet[tcp + 16] << 8) | packet[tcp + 17]
        new = ones_sum(packet[start:stop])
        struct.pack_into("!H", packet, tcp + 16, ~fold(fold(~stored & 0xFFFF, ~old & 0xFFFF), new) & 0xFFFF)
    return True
