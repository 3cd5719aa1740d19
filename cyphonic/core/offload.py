"""GSO super-packets and virtio-net headers, sans I/O (DESIGN section 10).

With IFF_VNET_HDR a TUN read is a 10-byte `struct virtio_net_hdr` and one
IP packet of up to 64 KB that the kernel has not yet cut into segments.
`segment` cuts it into packets that each fit one outer datagram (TCP: the
sequence number and flags per segment; UDP: one header per segment). The
L4 checksum is left partial: every receiver finishes it, with the kernel's
help (`Coalescer`, NEEDS_CSUM) or in software (`finish_checksum`), so
Python never sums a payload on the offload path.

The `Coalescer` does the reverse on receive: consecutive in-order segments
of one TCP flow of one tunnel become one GSO write, flushed at the end of
every receive batch.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from cyphonic.core.checksum import checksum, fold, ones_sum, pseudo_header_sum
from cyphonic.errors import ParseError
from cyphonic.wire.virtio import (
    F_NEEDS_CSUM,
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP_L4,
    PLAIN_HEADER,
    VNET_HDR,
    VNET_HDR_LEN,
)

TCP, UDP = 6, 17
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 1, 2, 4, 8, 16, 32, 64, 128
MAX_SUPER = 65535
MAX_FLOWS = 64  # flows a Coalescer holds at once: a batch of many flows costs bounded memory


def _l3(packet) -> tuple[int, int]:
    """(L3 header length, L4 protocol) of a packet we may cut or merge;
    ParseError for anything else (fragments, IPv6 extension headers)."""
    if len(packet) < 20:
        raise ParseError("packet shorter than an IP header")
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        if ihl < 20 or len(packet) < ihl:
            raise ParseError("bad IPv4 header length")
        if struct.unpack_from("!H", packet, 6)[0] & 0x3FFF:
            raise ParseError("IPv4 fragment")
        return ihl, packet[9]
    if version == 6 and len(packet) >= 40:
        return 40, packet[6]
    raise ParseError("not an IPv4/IPv6 packet")


def segment(frame: bytes | memoryview) -> list[bytes]:
    """The IP packets of one TUN read (virtio header + packet)."""
    packet, parts = plan(frame)
    return [header + packet[start:end] for header, start, end in parts]


Plan = tuple[memoryview, list[tuple[bytes, int, int]]]


def plan(frame: bytes | memoryview) -> Plan:
    """How to cut one TUN read: (the packet, [(segment header, payload start,
    payload end)]). The data path writes each header and payload slice
    straight into its send buffer; `segment` joins them."""
    if len(frame) < VNET_HDR_LEN + 20:
        raise ParseError("TUN frame too short")
    _flags, gso_type, _hdr_len, gso_size, _cstart, _coff = VNET_HDR.unpack_from(frame)
    packet = memoryview(frame)[VNET_HDR_LEN:]
    kind = gso_type & ~GSO_ECN
    if kind == GSO_NONE:
        return packet, [(b"", 0, len(packet))]
    if _hdr_len > len(packet):
        raise ParseError("GSO header length beyond the packet")
    l3, proto = _l3(packet)
    if kind in (GSO_TCPV4, GSO_TCPV6) and proto == TCP and len(packet) >= l3 + 20:
        if packet[l3 + 12] >> 4 < 5:
            raise ParseError("TCP data offset below 5")
        header = l3 + (packet[l3 + 12] >> 4) * 4
        return _cut(packet, l3, header, gso_size, _tcp_fix)
    if kind == GSO_UDP_L4 and proto == UDP:
        return _cut(packet, l3, l3 + 8, gso_size, _udp_fix)
    raise ParseError(f"unsupported GSO type {gso_type} for protocol {proto}")


def _cut(packet: memoryview, l3: int, header: int, size: int, fix: Callable) -> Plan:
    total = len(packet)
    if size == 0 or header >= total or size > MAX_SUPER:
        raise ParseError("impossible GSO sizes")
    if (total - header) // size > 256:
        raise ParseError("too many GSO segments")
    head = bytes(packet[:header])
    v4 = packet[0] >> 4 == 4
    ip_id = struct.unpack_from("!H", head, 4)[0] if v4 else 0
    out = []
    offsets = range(header, total, size)
    if v4:
        # only total length and ID change per segment: sum the rest once
        base = bytearray(head[:l3])
        base[2:6] = bytes(4)  # total length, ID
        base[10:12] = bytes(2)  # header checksum
        base_sum = ones_sum(base)
    last = len(offsets) - 1
    for i, start in enumerate(offsets):
        end = min(start + size, total)
        h = bytearray(head)
        length = header + end - start
        if v4:
            seg_id = (ip_id + i) & 0xFFFF
            struct.pack_into("!HH", h, 2, length, seg_id)
            struct.pack_into("!H", h, 10, ~fold(fold(base_sum, length), seg_id) & 0xFFFF)
        else:
            struct.pack_into("!H", h, 4, length - 40)
        fix(h, l3, start - header, i, i == last, length - l3)
        out.append((bytes(h), start, end))
    return packet, out


def _tcp_fix(h: bytearray, l3: int, offset: int, i: int, last: bool, l4_length: int) -> None:
    seq = struct.unpack_from("!I", h, l3 + 4)[0]
    struct.pack_into("!I", h, l3 + 4, (seq + offset) & 0xFFFFFFFF)
    flags = h[l3 + 13]
    if not last:
        flags &= ~(FIN | PSH)
    if i:
        flags &= ~CWR
    h[l3 + 13] = flags


def _udp_fix(h: bytearray, l3: int, offset: int, i: int, last: bool, l4_length: int) -> None:
    struct.pack_into("!H", h, l3 + 4, l4_length)


# --- receive side -------------------------------------------------------------


def _partial(packet: bytearray, l3: int, proto: int) -> bytes:
    """Put the pseudo-header sum in the L4 checksum field and return the
    virtio header that asks the kernel to finish it."""
    offset = 16 if proto == TCP else 6
    l4_length = len(packet) - l3
    struct.pack_into("!H", packet, l3 + offset, pseudo_header_sum(packet, l4_length, proto))
    return VNET_HDR.pack(F_NEEDS_CSUM, GSO_NONE, 0, 0, l3, offset)


def single_frame(packet: bytes | memoryview) -> bytes:
    """One received packet as a TUN write with the checksum left to the kernel."""
    try:
        l3, proto = _l3(packet)
    except ParseError:
        return PLAIN_HEADER + packet
    if proto not in (TCP, UDP) or len(packet) < l3 + (20 if proto == TCP else 8):
        return PLAIN_HEADER + packet
    p = bytearray(packet)
    return _partial(p, l3, proto) + p


def finish_checksum(packet: bytes | memoryview) -> bytes | memoryview:
    """The plain path's receiver: complete a possibly partial TCP/UDP checksum."""
    try:
        l3, proto = _l3(packet)
    except ParseError:
        return packet
    if proto == TCP and len(packet) >= l3 + 20:
        offset = 16
    elif proto == UDP and len(packet) >= l3 + 8:
        offset = 6
    else:
        return packet
    p = bytearray(packet)
    p[l3 + offset : l3 + offset + 2] = b"\0\0"
    value = ~fold(pseudo_header_sum(p, len(p) - l3, proto), ones_sum(memoryview(p)[l3:])) & 0xFFFF
    if proto == UDP and value == 0:
        value = 0xFFFF  # RFC 768: zero means "no checksum"
    struct.pack_into("!H", p, l3 + offset, value)
    return bytes(p)


_TCP_FIELDS = struct.Struct("!4xIIBBH")  # seq, ack, data offset, flags, window
_NO_MERGE = SYN | RST | URG | CWR | ECE | FIN


class _Flow:
    __slots__ = ("head", "l3", "header", "size", "payloads", "length", "next_seq", "closed", "match")

    def __init__(self, packet, l3: int, header: int, seq: int, match: tuple) -> None:
        self.head = bytes(packet[:header])
        self.l3 = l3
        self.header = header
        self.size = len(packet) - header
        self.payloads = [packet[header:]]
        self.length = len(packet)
        self.next_seq = (seq + self.size) & 0xFFFFFFFF
        self.closed = bool(packet[l3 + 13] & PSH)
        self.match = match


class Coalescer:
    """Merges consecutive in-order TCP segments of one flow of one tunnel
    into GSO frames (Linux GRO's rules: same addresses, ports, ack, window,
    options and TOS; equal-size segments, a shorter or PSH one ends the run).

    `write` receives each frame (virtio header + packet). Call `flush` at
    the end of every receive batch: nothing is held across wake-ups.
    This runs once per received packet, hence the flat code.
    """

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self.write = write
        self._flows: dict[tuple, _Flow] = {}

    def add(self, packet: bytes | memoryview, tunnel: object) -> None:
        n = len(packet)
        first = packet[0] if n else 0
        if first == 0x45 and n >= 40 and packet[9] == TCP and not (packet[6] & 0x3F or packet[7]):
            l3, key = 20, (id(tunnel), bytes(packet[12:24]))  # addresses + ports, contiguous
        elif first >> 4 == 6 and n >= 60 and packet[6] == TCP:
            l3, key = 40, (id(tunnel), bytes(packet[8:44]))
        else:
            # IPv4 with options, fragments, other protocols: never merged
            self.write(single_frame(packet))
            return
        seq, ack, offset, flags, window = _TCP_FIELDS.unpack_from(packet, l3)
        header = l3 + (offset >> 4) * 4
        payload = n - header
        flow = self._flows.get(key)
        if header < l3 + 20 or payload < 0:
            if flow is not None:
                self._emit(self._flows.pop(key))
            self.write(PLAIN_HEADER + packet)
            return
        mergeable = payload > 0 and not flags & _NO_MERGE
        # GRO's rules: same TOS/traffic class + flow label and TTL/hop limit
        ip = bytes(packet[1:2]) + bytes(packet[8:9]) if l3 == 20 else bytes(packet[0:4]) + bytes(packet[7:8])
        match = (ack, window, header, ip, bytes(packet[l3 + 20 : header]))
        if flow is not None:
            if (
                mergeable
                and not flow.closed
                and seq == flow.next_seq
                and match == flow.match
                and payload <= flow.size
                and len(flow.payloads[-1]) == flow.size
                and flow.length + payload <= MAX_SUPER
            ):
                flow.payloads.append(packet[header:])
                flow.length += payload
                flow.next_seq = (seq + payload) & 0xFFFFFFFF
                if flags & PSH:
                    flow.closed = True
                    h = flow.head
                    flow.head = h[: l3 + 13] + bytes([h[l3 + 13] | PSH]) + h[l3 + 14 :]
                return
            self._emit(self._flows.pop(key))
        if mergeable:
            if len(self._flows) >= MAX_FLOWS:
                # the oldest held flow makes room (insertion order, as the C coalescer does)
                self._emit(self._flows.pop(next(iter(self._flows))))
            self._flows[key] = _Flow(packet, l3, header, seq, match)
        else:
            self.write(single_frame(packet))

    def flush(self) -> None:
        for flow in self._flows.values():
            self._emit(flow)
        self._flows.clear()

    def _emit(self, flow: _Flow) -> None:
        if len(flow.payloads) == 1:
            self.write(single_frame(flow.head + flow.payloads[0]))
            return
        h = bytearray(flow.head)
        l3 = flow.l3
        v4 = h[0] >> 4 == 4
        if v4:
            struct.pack_into("!H", h, 2, flow.length)
            h[10:12] = b"\0\0"
            struct.pack_into("!H", h, 10, checksum(h[:l3]))
        else:
            struct.pack_into("!H", h, 4, flow.length - 40)
        struct.pack_into("!H", h, l3 + 16, pseudo_header_sum(h, flow.length - l3, TCP))
        vnet = VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV4 if v4 else GSO_TCPV6, flow.header, flow.size, l3, 16)
        self.write(b"".join((vnet, h, *flow.payloads)))
