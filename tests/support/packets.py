"""Test packets: IPv4 and IPv6 with TCP or UDP, and the TUN frames that carry them.

Headers are packed field by field (RFC 791, RFC 8200, RFC 9293, RFC 768),
with the IPv4 header checksum filled in and the L4 checksum left zero until
`with_full_checksum` (what an application's kernel sends on a TUN without
offloads) or `with_partial_checksum` (CHECKSUM_PARTIAL: the pseudo-header sum,
as a TUN with offloads hands it over). A TUN frame with offloads is a
virtio_net_hdr followed by one IP packet of up to 64 KB (`tso_frame`,
`uso_frame`); `kernel_finish` does to a frame written to the TUN what the
kernel does with NEEDS_CSUM. Every checksum comes from `tests.support.checksum`.
"""

from __future__ import annotations

import ipaddress
import random
import struct

from tests.support.checksum import l3_of, pseudo_header, rfc1071, rfc1071_sum

# virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET = struct.Struct("<BBHHHH")
NEEDS_CSUM = 1
GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, GSO_ECN = 0, 1, 4, 5, 0x80
ICMP, TCP, UDP = 1, 6, 17
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 1, 2, 4, 8, 16, 32, 64, 128

SRC4, DST4 = ipaddress.IPv4Address("10.64.0.2").packed, ipaddress.IPv4Address("10.64.0.3").packed
SRC6, DST6 = ipaddress.IPv6Address("fd00:64::2").packed, ipaddress.IPv6Address("fd00:64::3").packed
MSS4, MSS6 = 1368, 1348  # a 1420-byte tunnel MTU, TCP timestamps on

Address = bytes | str | ipaddress.IPv4Address | ipaddress.IPv6Address


def packed(address: Address) -> bytes:
    return address if isinstance(address, bytes) else ipaddress.ip_address(address).packed


# --- headers ---------------------------------------------------------------------------------


def ipv4_header(
    proto: int,
    l4_length: int,
    *,
    src: Address = SRC4,
    dst: Address = DST4,
    ident: int = 0x1234,
    tos: int = 0,
    ttl: int = 64,
    df: bool = True,
    options: bytes = b"",
) -> bytes:
    ihl = 5 + len(options) // 4
    h = bytearray(
        struct.pack(
            "!BBHHHBBH4s4s",
            0x40 | ihl,
            tos,
            ihl * 4 + l4_length,
            ident & 0xFFFF,
            0x4000 if df else 0,
            ttl,
            proto,
            0,
            packed(src),
            packed(dst),
        )
        + options
    )
    struct.pack_into("!H", h, 10, rfc1071(h))
    return bytes(h)


def ipv6_header(
    proto: int,
    l4_length: int,
    *,
    src: Address = SRC6,
    dst: Address = DST6,
    tc: int = 0,
    flow: int = 0x12345,
    hlim: int = 64,
) -> bytes:
    first = (6 << 28) | (tc << 20) | flow
    return struct.pack("!IHBB16s16s", first, l4_length, proto, hlim, packed(src), packed(dst))


def timestamps(tsval: int = 1000, tsecr: int = 2000) -> bytes:
    """NOP, NOP, TCP timestamps (RFC 7323): 12 bytes, as Linux sends them."""
    return b"\x01\x01\x08\x0a" + struct.pack("!II", tsval, tsecr)


def tcp_header(
    seq: int,
    *,
    ack: int = 77777,
    flags: int = ACK | PSH,
    window: int = 502,
    options: bytes = b"",
    sport: int = 40000,
    dport: int = 5201,
) -> bytes:
    doff = 5 + len(options) // 4
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, window, 0, 0) + options


def udp_header(length: int, sport: int = 40001, dport: int = 5202) -> bytes:
    return struct.pack("!HHHH", sport, dport, length, 0)


# --- packets ---------------------------------------------------------------------------------


def ip_header(
    v6: bool,
    proto: int,
    l4_length: int,
    src: Address | None,
    dst: Address | None,
    *,
    ident: int,
    tos: int = 0,
    tc: int = 0,
    flow: int = 0x12345,
    df: bool = True,
    options: bytes = b"",
) -> bytes:
    if v6:
        return ipv6_header(proto, l4_length, src=src or SRC6, dst=dst or DST6, tc=tc, flow=flow)
    return ipv4_header(proto, l4_length, src=src or SRC4, dst=dst or DST4, ident=ident, tos=tos, df=df, options=options)


def tcp_packet(
    v6: bool,
    payload: bytes,
    seq: int = 1000,
    *,
    src: Address | None = None,
    dst: Address | None = None,
    ident: int = 0x1234,
    tos: int = 0,
    tc: int = 0,
    flow: int = 0x12345,
    ip_options: bytes = b"",
    **tcp,
) -> bytes:
    """A TCP segment with timestamps (unless `options` says otherwise), L4 checksum zero."""
    tcp.setdefault("options", timestamps())
    th = tcp_header(seq, **tcp)
    l4 = len(th) + len(payload)
    return ip_header(v6, TCP, l4, src, dst, ident=ident, tos=tos, tc=tc, flow=flow, options=ip_options) + th + payload


def udp_packet(
    v6: bool,
    payload: bytes,
    *,
    src: Address | None = None,
    dst: Address | None = None,
    ident: int = 0x1234,
    flow: int = 0x12345,
    df: bool = True,
    sport: int = 40001,
    dport: int = 5202,
) -> bytes:
    """A UDP datagram, L4 checksum zero."""
    l4 = 8 + len(payload)
    return ip_header(v6, UDP, l4, src, dst, ident=ident, flow=flow, df=df) + udp_header(l4, sport, dport) + payload


def ipv4_udp(src: str, dst: str, payload: bytes, sport: int = 5000, dport: int = 6000) -> bytes:
    """A minimal IPv4/UDP packet as an application would send it, checksums complete."""
    packet = udp_packet(False, payload, src=src, dst=dst, ident=1, df=False, sport=sport, dport=dport)
    return with_full_checksum(packet)


def _l4_field(packet: bytes) -> tuple[int, int, int]:
    """(IP header length, protocol, offset of the L4 checksum field)."""
    l3, proto = l3_of(packet)
    return l3, proto, l3 + (16 if proto == TCP else 6)


def with_partial_checksum(packet: bytes) -> bytes:
    """The L4 checksum field holding the pseudo-header sum (CHECKSUM_PARTIAL)."""
    p = bytearray(packet)
    l3, proto, field = _l4_field(p)
    p[field : field + 2] = b"\0\0"
    struct.pack_into("!H", p, field, rfc1071_sum(pseudo_header(p, len(p) - l3, proto)))
    return bytes(p)


def with_full_checksum(packet: bytes) -> bytes:
    """The L4 checksum complete; a UDP checksum that computes to 0 is sent as 0xFFFF (RFC 768)."""
    p = bytearray(packet)
    l3, proto, field = _l4_field(p)
    p[field : field + 2] = b"\0\0"
    value = rfc1071(pseudo_header(p, len(p) - l3, proto) + p[l3:])
    if proto == UDP and value == 0:
        value = 0xFFFF
    struct.pack_into("!H", p, field, value)
    return bytes(p)


def payload_of(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def tcp_parts(packet: bytes) -> dict:
    """The TCP header's fields, its options and the payload of one packet."""
    l3, _ = l3_of(packet)
    sport, dport, seq, ack, doff, flags, window, _check, _urg = struct.unpack_from("!HHIIBBHHH", packet, l3)
    header = l3 + (doff >> 4) * 4
    return dict(
        l3=l3,
        header=header,
        sport=sport,
        dport=dport,
        seq=seq,
        ack=ack,
        flags=flags,
        window=window,
        options=packet[l3 + 20 : header],
        payload=packet[header:],
    )


# --- TUN frames with a virtio_net_hdr ----------------------------------------------------------


def partial_frame(packet: bytes) -> bytes:
    """A TUN read of one packet without GSO, its checksum left partial."""
    l3, _, field = _l4_field(packet)
    return VNET.pack(NEEDS_CSUM, GSO_NONE, 0, 0, l3, field - l3) + with_partial_checksum(packet)


def tso_frame(packet: bytes, gso_size: int) -> bytes:
    """A TUN read with TSO: one TCP super-packet, checksum partial."""
    l3, _ = l3_of(packet)
    header = l3 + (packet[l3 + 12] >> 4) * 4
    if len(packet) - header <= gso_size:  # one segment: the kernel sends it without GSO
        return partial_frame(packet)
    gso_type = GSO_TCPV6 if packet[0] >> 4 == 6 else GSO_TCPV4
    return VNET.pack(NEEDS_CSUM, gso_type, header, gso_size, l3, 16) + with_partial_checksum(packet)


def uso_frame(packet: bytes, gso_size: int) -> bytes:
    """A TUN read with USO (UDP_SEGMENT), even of a single datagram."""
    l3, _ = l3_of(packet)
    return VNET.pack(NEEDS_CSUM, GSO_UDP_L4, l3 + 8, gso_size, l3, 6) + with_partial_checksum(packet)


def good_tso(v6: bool = False, size: int = 10 * MSS4) -> bytes:
    """A valid TSO read of `size` payload bytes, cut at the MSS."""
    return tso_frame(tcp_packet(v6, payload_of(size), flags=ACK | PSH), MSS6 if v6 else MSS4)


def with_vnet(frame: bytes, **fields) -> bytes:
    """`frame` with some virtio_net_hdr fields replaced."""
    names = ("flags", "gso_type", "hdr_len", "gso_size", "csum_start", "csum_offset")
    values = dict(zip(names, VNET.unpack_from(frame), strict=True))
    values.update(fields)
    return VNET.pack(*(values[n] for n in names)) + frame[VNET.size :]


def kernel_finish(frame: bytes) -> bytes:
    """What the kernel does with a TUN write: honour NEEDS_CSUM
    (skb_checksum_help: fold the sum from csum_start, 0 becomes 0xFFFF)."""
    flags, _gso_type, _hdr_len, _gso_size, start, offset = VNET.unpack_from(frame)
    packet = bytearray(frame[VNET.size :])
    if flags & NEEDS_CSUM:
        value = rfc1071(packet[start:]) or 0xFFFF
        struct.pack_into("!H", packet, start + offset, value)
    return bytes(packet)
