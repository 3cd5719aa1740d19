"""The offload data plane's packet surgery (cyphonic.core.offload), sans I/O.

GSO super-packets are built here the way a TUN with TSO/USO hands them over
(virtio_net_hdr + one IP packet of up to 64 KB, L4 checksum left partial),
then cut with `segment`, glued back with `Coalescer` and checksummed with
`single_frame`/`finish_checksum`. Every checksum is verified with the
word-by-word RFC 1071 sum below, independent of the product's fast one;
frames written to the TUN with NEEDS_CSUM are finished the way the kernel
does it (sum from csum_start, store at csum_start + csum_offset) first.

Bad input (DESIGN section 10, issue "Data plane at kernel-offload speed"):
random bytes and mutated headers raise only ParseError from `segment` and
nothing from the others; impossible sizes are refused.
"""

from __future__ import annotations

import ipaddress
import os
import random
import struct

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from cyphonic.core import offload
from cyphonic.errors import ParseError

FUZZ = settings(max_examples=int(os.environ.get("CYPHONIC_FUZZ_EXAMPLES", "300")), deadline=None)

VNET = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
NEEDS_CSUM = 1
GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, GSO_ECN = 0, 1, 4, 5, 0x80
TCP, UDP, ICMP = 6, 17, 1
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 1, 2, 4, 8, 16, 32, 64, 128

SRC4, DST4 = ipaddress.IPv4Address("10.64.0.2").packed, ipaddress.IPv4Address("10.64.0.3").packed
SRC6, DST6 = ipaddress.IPv6Address("fd00:64::2").packed, ipaddress.IPv6Address("fd00:64::3").packed


# --- an independent RFC 1071 ---------------------------------------------------------------


def rfc1071_sum(data: bytes) -> int:
    """16-bit ones'-complement sum, word by word with end-around carry."""
    data = bytes(data)
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return total


def rfc1071(data: bytes) -> int:
    """The value to put in a zeroed checksum field."""
    return ~rfc1071_sum(data) & 0xFFFF


def pseudo_header(packet: bytes, l4_length: int, proto: int) -> bytes:
    if packet[0] >> 4 == 4:
        return packet[12:20] + struct.pack("!BBH", 0, proto, l4_length)
    return packet[8:40] + struct.pack("!IxxxB", l4_length, proto)


def l3_of(packet: bytes) -> tuple[int, int]:
    if packet[0] >> 4 == 4:
        return (packet[0] & 15) * 4, packet[9]
    return 40, packet[6]


def l4_checksum_ok(packet: bytes) -> bool:
    l3, proto = l3_of(packet)
    l4 = packet[l3:]
    return rfc1071_sum(pseudo_header(packet, len(l4), proto) + l4) == 0xFFFF


def ipv4_header_ok(packet: bytes) -> bool:
    return rfc1071_sum(packet[: (packet[0] & 15) * 4]) == 0xFFFF


def kernel_finish(frame: bytes) -> bytes:
    """What the kernel does with a TUN write: honour NEEDS_CSUM
    (skb_checksum_help: fold the sum from csum_start, 0 becomes 0xFFFF)."""
    flags, _gso_type, _hdr_len, _gso_size, start, offset = VNET.unpack_from(frame)
    packet = bytearray(frame[VNET.size :])
    if flags & NEEDS_CSUM:
        value = rfc1071(packet[start:]) or 0xFFFF
        struct.pack_into("!H", packet, start + offset, value)
    return bytes(packet)


# --- packets as a TUN with TSO/USO hands them over ---------------------------------------------


def ipv4_header(proto: int, l4_length: int, *, ident: int = 0x1234, tos: int = 0, ttl: int = 64, options: bytes = b"") -> bytes:
    ihl = 5 + len(options) // 4
    h = bytearray(
        struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, tos, ihl * 4 + l4_length, ident, 0x4000, ttl, proto, 0, SRC4, DST4)
        + options
    )
    struct.pack_into("!H", h, 10, rfc1071(h))
    return bytes(h)


def ipv6_header(proto: int, l4_length: int, *, tc: int = 0, flow: int = 0x12345, hlim: int = 64) -> bytes:
    first = (6 << 28) | (tc << 20) | flow
    return struct.pack("!IHBB16s16s", first, l4_length, proto, hlim, SRC6, DST6)


def timestamps(tsval: int = 1000, tsecr: int = 2000) -> bytes:
    return b"\x01\x01\x08\x0a" + struct.pack("!II", tsval, tsecr)


def tcp_header(seq: int, *, ack: int = 77777, flags: int = ACK | PSH, window: int = 502, options: bytes = b"",
               sport: int = 40000, dport: int = 5201) -> bytes:
    doff = 5 + len(options) // 4
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, window, 0, 0) + options


def udp_header(length: int, sport: int = 40001, dport: int = 5202) -> bytes:
    return struct.pack("!HHHH", sport, dport, length, 0)


def with_partial_checksum(packet: bytes) -> bytes:
    """The L4 checksum field holding the pseudo-header sum (CHECKSUM_PARTIAL)."""
    p = bytearray(packet)
    l3, proto = l3_of(p)
    offset = 16 if proto == TCP else 6
    p[l3 + offset : l3 + offset + 2] = b"\0\0"
    struct.pack_into("!H", p, l3 + offset, rfc1071_sum(pseudo_header(p, len(p) - l3, proto)))
    return bytes(p)


def with_full_checksum(packet: bytes) -> bytes:
    p = bytearray(packet)
    l3, proto = l3_of(p)
    offset = 16 if proto == TCP else 6
    p[l3 + offset : l3 + offset + 2] = b"\0\0"
    value = rfc1071(pseudo_header(p, len(p) - l3, proto) + p[l3:])
    if proto == UDP and value == 0:
        value = 0xFFFF
    struct.pack_into("!H", p, l3 + offset, value)
    return bytes(p)


def tcp_packet(v6: bool, payload: bytes, seq: int = 1000, *, ident: int = 0x1234, tos: int = 0, tc: int = 0,
               ip_options: bytes = b"", **tcp) -> bytes:
    tcp.setdefault("options", timestamps())
    th = tcp_header(seq, **tcp)
    l4 = len(th) + len(payload)
    ip = ipv6_header(TCP, l4, tc=tc) if v6 else ipv4_header(TCP, l4, ident=ident, tos=tos, options=ip_options)
    return ip + th + payload


def udp_packet(v6: bool, payload: bytes, *, ident: int = 0x1234) -> bytes:
    l4 = 8 + len(payload)
    ip = ipv6_header(UDP, l4) if v6 else ipv4_header(UDP, l4, ident=ident)
    return ip + udp_header(l4) + payload


def tso_frame(packet: bytes, gso_size: int) -> bytes:
    """A TUN read with TSO: one TCP super-packet, checksum partial."""
    l3, _ = l3_of(packet)
    header = l3 + (packet[l3 + 12] >> 4) * 4
    gso_type = GSO_TCPV6 if packet[0] >> 4 == 6 else GSO_TCPV4
    if len(packet) - header <= gso_size:  # one segment: the kernel sends it without GSO
        return VNET.pack(NEEDS_CSUM, GSO_NONE, 0, 0, l3, 16) + with_partial_checksum(packet)
    return VNET.pack(NEEDS_CSUM, gso_type, header, gso_size, l3, 16) + with_partial_checksum(packet)


def uso_frame(packet: bytes, gso_size: int) -> bytes:
    l3, _ = l3_of(packet)
    return VNET.pack(NEEDS_CSUM, GSO_UDP_L4, l3 + 8, gso_size, l3, 6) + with_partial_checksum(packet)


def payload_of(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def tcp_parts(packet: bytes) -> dict:
    l3, _ = l3_of(packet)
    sport, dport, seq, ack, doff, flags, window, check, urg = struct.unpack_from("!HHIIBBHHH", packet, l3)
    header = l3 + (doff >> 4) * 4
    return dict(l3=l3, header=header, sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, window=window,
                options=packet[l3 + 20 : header], payload=packet[header:])


def segments_of(v6: bool, payload: bytes, gso_size: int, seq: int = 1000, flags: int = ACK, **kw) -> list[bytes]:
    """`segment` of one super-packet, as the sender's PacketHandlingModule cuts it."""
    return offload.segment(tso_frame(tcp_packet(v6, payload, seq, flags=flags, **kw), gso_size))


MSS4, MSS6 = 1368, 1348  # 1420-byte tunnel MTU, timestamps on


# --- segment: TCP ---------------------------------------------------------------------------------


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("size", [1, 1367, 1368, 1369, 2 * 1368, 47 * 1368, 65535 - 72])
@pytest.mark.parametrize("flags", [ACK, ACK | PSH, ACK | PSH | FIN, ACK | CWR | ECE | PSH])
def test_tso_super_packet_is_cut_into_mss_segments(v6, size, flags):
    mss = MSS6 if v6 else MSS4
    payload = payload_of(size, size)
    seq, ident = 0xFFFFFFFF - 3000, 0xFFFE  # both wrap inside the super-packet
    original = tcp_packet(v6, payload, seq, ident=ident, flags=flags, ack=0xDEADBEEF, window=1234)
    segments = offload.segment(tso_frame(original, mss))

    n = -(-size // mss)
    assert len(segments) == n
    first = tcp_parts(original)
    for i, s in enumerate(segments):
        chunk = payload[i * mss : (i + 1) * mss]
        parts = tcp_parts(s)
        assert parts["payload"] == chunk
        assert len(s) == first["header"] + len(chunk)
        if v6:
            assert struct.unpack_from("!H", s, 4)[0] == len(s) - 40
            assert s[:4] == original[:4] and s[6:40] == original[6:40]  # class, label, next header, hops, addresses
        else:
            assert struct.unpack_from("!H", s, 2)[0] == len(s)
            assert struct.unpack_from("!H", s, 4)[0] == (ident + i) & 0xFFFF
            assert ipv4_header_ok(s)
            assert s[6:10] == original[6:10] and s[12:20] == original[12:20]  # DF, TTL, proto, addresses
        assert parts["seq"] == (seq + i * mss) & 0xFFFFFFFF
        for key in ("sport", "dport", "ack", "window", "options", "header"):
            assert parts[key] == first[key], key
        last = i == n - 1
        expected = flags
        if not last:
            expected &= ~(FIN | PSH)
        if i:
            expected &= ~CWR
        assert parts["flags"] == expected, (i, parts["flags"])
        # the checksum is left partial: the receiver finishes it
        assert l4_checksum_ok(offload.finish_checksum(s))
    assert b"".join(tcp_parts(s)["payload"] for s in segments) == payload


def test_tso_keeps_the_ecn_bit_of_gso_type_and_ip_options():
    payload = payload_of(5000)
    packet = tcp_packet(False, payload, ip_options=b"\x01\x01\x01\x00", flags=ACK | PSH)
    frame = bytearray(tso_frame(packet, MSS4))
    frame[1] |= GSO_ECN
    segments = offload.segment(bytes(frame))
    assert len(segments) == 4
    assert all(s[0] == 0x46 and s[20:24] == b"\x01\x01\x01\x00" and ipv4_header_ok(s) for s in segments)
    assert b"".join(tcp_parts(s)["payload"] for s in segments) == payload


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_plain_frame_is_one_packet_as_is(v6):
    packet = tcp_packet(v6, b"hello")
    frame = tso_frame(packet, MSS4)
    assert VNET.unpack_from(frame)[1] == GSO_NONE
    assert offload.segment(frame) == [frame[VNET.size :]]
    icmp = ipv4_header(ICMP, 8) + b"\x08\0\xf7\xff\0\0\0\0"
    assert offload.segment(offload.PLAIN_HEADER + icmp) == [icmp]


# --- segment: UDP ------------------------------------------------------------------------------


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("size,gso_size", [(1, 1392), (1392, 1392), (1393, 1392), (40 * 1372 + 7, 1372), (65535 - 48, 1200), (999, 2)])
def test_uso_super_packet_is_cut_into_datagrams(v6, size, gso_size):
    payload = payload_of(size, size)
    original = udp_packet(v6, payload, ident=0xFFFF)
    l3 = 40 if v6 else 20
    if size // gso_size > 256:
        with pytest.raises(ParseError):
            offload.segment(uso_frame(original, gso_size))
        return
    segments = offload.segment(uso_frame(original, gso_size))
    assert len(segments) == -(-size // gso_size)
    for i, s in enumerate(segments):
        chunk = payload[i * gso_size : (i + 1) * gso_size]
        assert s[l3 + 8 :] == chunk
        assert len(s) == l3 + 8 + len(chunk)
        assert struct.unpack_from("!HHH", s, l3) == (40001, 5202, 8 + len(chunk))
        if v6:
            assert struct.unpack_from("!H", s, 4)[0] == 8 + len(chunk)
            assert s[6:40] == original[6:40]
        else:
            assert struct.unpack_from("!HH", s, 2) == (len(s), (0xFFFF + i) & 0xFFFF)
            assert ipv4_header_ok(s)
        assert l4_checksum_ok(offload.finish_checksum(s))
    assert b"".join(s[l3 + 8 :] for s in segments) == payload


# --- segment: impossible and unsupported frames ---------------------------------------------------


def good_tso(v6: bool = False, size: int = 10 * 1368) -> bytes:
    return tso_frame(tcp_packet(v6, payload_of(size), flags=ACK | PSH), MSS6 if v6 else MSS4)


def with_vnet(frame: bytes, **fields) -> bytes:
    names = ("flags", "gso_type", "hdr_len", "gso_size", "csum_start", "csum_offset")
    values = dict(zip(names, VNET.unpack_from(frame)))
    values.update(fields)
    return VNET.pack(*(values[n] for n in names)) + frame[VNET.size :]


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(with_vnet(good_tso(), gso_size=0), id="gso_size-0"),
        pytest.param(with_vnet(good_tso(True), gso_size=0), id="gso_size-0-v6"),
        pytest.param(with_vnet(good_tso(size=60000), gso_size=1), id="60000-segments"),
        pytest.param(with_vnet(good_tso(size=3000), gso_size=2), id="1500-segments"),
        pytest.param(with_vnet(uso_frame(udp_packet(False, bytes(60000)), 1), gso_size=1), id="udp-60000-segments"),
        pytest.param(with_vnet(uso_frame(udp_packet(True, bytes(0)), 1200), gso_size=0), id="udp-gso_size-0"),
        pytest.param(good_tso()[:29], id="shorter-than-an-ip-header"),
        pytest.param(b"", id="empty"),
        pytest.param(good_tso()[:VNET.size + 30], id="tcp-header-cut"),
        pytest.param(uso_frame(udp_packet(False, bytes(3000)), 1392)[: VNET.size + 25], id="udp-header-cut"),
        pytest.param(with_vnet(good_tso(), gso_type=GSO_UDP_L4), id="uso-on-tcp"),
        pytest.param(with_vnet(uso_frame(udp_packet(False, bytes(3000)), 1392), gso_type=GSO_TCPV4), id="tso-on-udp"),
        pytest.param(with_vnet(good_tso(), gso_type=3), id="ufo"),
        pytest.param(with_vnet(good_tso(), gso_type=0x7F), id="unknown-gso-type"),
    ],
)
def test_impossible_or_unsupported_super_packets_are_refused(frame):
    with pytest.raises(ParseError):
        offload.segment(frame)


def test_ipv4_fragment_and_ipv6_extension_headers_are_refused():
    frame = bytearray(good_tso())
    frame[VNET.size + 6] |= 0x20  # more fragments
    with pytest.raises(ParseError):
        offload.segment(bytes(frame))
    packet = tcp_packet(True, payload_of(5000))
    hop_by_hop = packet[:6] + bytes([0]) + packet[7:40] + bytes([TCP, 0, 1, 4, 0, 0, 0, 0]) + packet[40:]
    frame = VNET.pack(NEEDS_CSUM, GSO_TCPV6, 80, MSS6, 48, 16) + hop_by_hop
    with pytest.raises(ParseError):
        offload.segment(frame)


def test_tcp_header_longer_than_the_packet_is_refused():
    packet = bytearray(tcp_packet(False, b"") + bytes(16))  # 48-byte TCP part
    packet[20 + 12] = 0xF0  # ...claiming a 60-byte TCP header
    with pytest.raises(ParseError):
        offload.segment(VNET.pack(NEEDS_CSUM, GSO_TCPV4, 80, MSS4, 20, 16) + bytes(packet))


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_hdr_len_beyond_the_packet_is_refused(v6):
    frame = good_tso(v6)
    with pytest.raises(ParseError):
        offload.segment(with_vnet(frame, hdr_len=len(frame)))


@pytest.mark.parametrize("doff", [0, 2, 4])
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_tcp_data_offset_below_five_is_refused(v6, doff):
    frame = bytearray(good_tso(v6))
    frame[VNET.size + (40 if v6 else 20) + 12] = doff << 4
    with pytest.raises(ParseError):
        offload.segment(bytes(frame))


@pytest.mark.parametrize("kind", ["tcp4", "tcp6", "udp4"])
def test_gso_frame_without_payload_is_refused_not_silently_dropped(kind):
    if kind == "udp4":
        frame = uso_frame(udp_packet(False, b""), 1392)
    else:
        packet = tcp_packet(kind == "tcp6", b"")
        l3 = 40 if kind == "tcp6" else 20
        frame = VNET.pack(NEEDS_CSUM, GSO_TCPV6 if kind == "tcp6" else GSO_TCPV4, l3 + 32, 1348, l3, 16) + packet
    with pytest.raises(ParseError):
        offload.segment(frame)


def test_segment_count_limit_is_a_few_hundred():
    ok = with_vnet(good_tso(size=256 * 100), gso_size=100)
    assert len(offload.segment(ok)) == 256
    with pytest.raises(ParseError):
        offload.segment(with_vnet(good_tso(size=300 * 100), gso_size=100))


# --- finish_checksum and single_frame ---------------------------------------------------------------


SIZES = [0, 1, 2, 3, 17, 1367, 1368, 9001, 65535 - 72]


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("proto", [TCP, UDP], ids=["tcp", "udp"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("start", ["garbage", "partial", "zero"])
def test_finish_checksum_verifies_and_changes_nothing_else(v6, proto, size, start):
    payload = payload_of(size, size)
    packet = bytearray(tcp_packet(v6, payload) if proto == TCP else udp_packet(v6, payload))
    l3 = 40 if v6 else 20
    field = l3 + (16 if proto == TCP else 6)
    if start == "garbage":
        packet[field : field + 2] = b"\xA5\x5A"
    elif start == "partial":
        packet = bytearray(with_partial_checksum(bytes(packet)))
    finished = offload.finish_checksum(bytes(packet))
    assert l4_checksum_ok(finished)
    assert finished[:field] == packet[:field] and finished[field + 2 :] == packet[field + 2 :]
    assert finished == with_full_checksum(bytes(packet))


def packet_whose_checksum_is_zero(v6: bool, proto: int) -> bytes:
    """A packet whose correct checksum computes to 0x0000 (two payload bytes tuned)."""
    base = tcp_packet(v6, bytes(10)) if proto == TCP else udp_packet(v6, bytes(10))
    p = bytearray(base)
    l3 = 40 if v6 else 20
    field = l3 + (16 if proto == TCP else 6)
    p[field : field + 2] = b"\0\0"
    s = rfc1071_sum(pseudo_header(p, len(p) - l3, proto) + p[l3:])
    struct.pack_into("!H", p, len(p) - 2, 0xFFFF - s)  # the sum becomes 0xFFFF, the checksum 0
    assert rfc1071(pseudo_header(p, len(p) - l3, proto) + p[l3:]) == 0
    return bytes(p)


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_udp_checksum_computing_to_zero_is_sent_as_ffff(v6):
    l3 = 40 if v6 else 20
    finished = offload.finish_checksum(packet_whose_checksum_is_zero(v6, UDP))
    assert finished[l3 + 6 : l3 + 8] == b"\xff\xff"
    assert l4_checksum_ok(finished)
    tcp = offload.finish_checksum(packet_whose_checksum_is_zero(v6, TCP))
    assert tcp[l3 + 16 : l3 + 18] == b"\0\0"  # TCP has no "no checksum" value
    assert l4_checksum_ok(tcp)


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(ipv4_header(ICMP, 8) + b"\x08\0\xf7\xff\0\0\0\0", id="icmp"),
        pytest.param(ipv4_header(TCP, 10) + bytes(10), id="tcp-cut"),
        pytest.param(ipv6_header(UDP, 4) + bytes(4), id="udp-cut"),
        pytest.param(b"\x45" + bytes(10), id="short"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00" * 40, id="version-0"),
    ],
)
def test_finish_checksum_and_single_frame_pass_other_packets_through(packet):
    assert offload.finish_checksum(packet) == packet
    assert offload.single_frame(packet) == offload.PLAIN_HEADER + packet


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("proto", [TCP, UDP], ids=["tcp", "udp"])
@pytest.mark.parametrize("size", SIZES)
def test_single_frame_leaves_the_checksum_to_the_kernel(v6, proto, size):
    payload = payload_of(size, size)
    packet = tcp_packet(v6, payload) if proto == TCP else udp_packet(v6, payload)
    frame = offload.single_frame(packet)
    l3 = 40 if v6 else 20
    offset = 16 if proto == TCP else 6
    assert VNET.unpack_from(frame) == (NEEDS_CSUM, GSO_NONE, 0, 0, l3, offset)
    body = frame[VNET.size :]
    assert body[: l3 + offset] == packet[: l3 + offset] and body[l3 + offset + 2 :] == packet[l3 + offset + 2 :]
    written = kernel_finish(frame)
    assert l4_checksum_ok(written)
    assert written == with_full_checksum(packet) or proto == UDP  # UDP: 0 is mangled to 0xFFFF either way


# --- Coalescer ---------------------------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def __call__(self, frame: bytes) -> None:
        self.frames.append(frame)

    def take(self) -> list[bytes]:
        out, self.frames = self.frames, []
        return out


def coalesce(packets: list[bytes], tunnel: object = "t") -> list[bytes]:
    sink = Sink()
    c = offload.Coalescer(sink)
    for p in packets:
        c.add(p, tunnel)
    c.flush()
    return sink.frames


def check_written_frame(frame: bytes) -> bytes:
    """The packet the kernel gets from a TUN write: lengths and checksums right."""
    flags, gso_type, hdr_len, gso_size, start, offset = VNET.unpack_from(frame)
    packet = kernel_finish(frame)
    if packet[0] >> 4 == 4:
        assert struct.unpack_from("!H", packet, 2)[0] == len(packet)
        assert ipv4_header_ok(packet)
    else:
        assert struct.unpack_from("!H", packet, 4)[0] == len(packet) - 40
    assert flags & NEEDS_CSUM
    assert l4_checksum_ok(packet)
    if gso_type == GSO_UDP_L4:  # receive coalescing of UDP, if the product does it
        l3, proto = l3_of(packet)
        assert proto == UDP and (hdr_len, start, offset) == (l3 + 8, l3, 6)
        assert struct.unpack_from("!H", packet, l3 + 4)[0] == len(packet) - l3
        assert len(packet) - l3 - 8 > gso_size
    elif gso_type != GSO_NONE:
        parts = tcp_parts(packet)
        assert gso_type == (GSO_TCPV6 if packet[0] >> 4 == 6 else GSO_TCPV4)
        assert (hdr_len, start, offset) == (parts["header"], parts["l3"], 16)
        assert len(parts["payload"]) > gso_size  # more than one segment
    return packet


def runs(frames: list[bytes]) -> list[tuple[int, int]]:
    """(first seq, payload length) of each frame."""
    out = []
    for f in frames:
        parts = tcp_parts(check_written_frame(f))
        out.append((parts["seq"], len(parts["payload"])))
    return out


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("size", [2 * 1368, 10 * 1368 + 1, 47 * 1368, 65535 - 72])
@pytest.mark.parametrize("flags", [ACK, ACK | PSH])
def test_in_order_segments_become_the_original_super_packet(v6, size, flags):
    mss = MSS6 if v6 else MSS4
    original = tcp_packet(v6, payload_of(size, size), 0xFFFFF000, flags=flags)
    frame = tso_frame(original, mss)
    frames = coalesce(offload.segment(frame))
    assert len(frames) == 1
    out = frames[0]
    flags_, gso_type, hdr_len, gso_size, start, offset = VNET.unpack_from(out)
    assert (flags_, gso_type, hdr_len, gso_size, start, offset) == VNET.unpack_from(frame)
    # byte for byte the super-packet the sender's TUN read, once the kernel finishes both
    assert check_written_frame(out) == kernel_finish(frame)


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_single_segment_is_written_without_gso(v6):
    packet = offload.segment(tso_frame(tcp_packet(v6, b"x" * 100), MSS4))[0]
    (frame,) = coalesce([packet])
    assert VNET.unpack_from(frame)[1:4] == (GSO_NONE, 0, 0)
    assert check_written_frame(frame) == with_full_checksum(packet)


def test_cwr_first_and_fin_last_segments_are_written_alone():
    payload = payload_of(10 * MSS4)
    segments = segments_of(False, payload, MSS4, seq=0, flags=ACK | CWR | PSH | FIN)
    frames = coalesce(segments)
    assert runs(frames) == [(0, MSS4), (MSS4, 8 * MSS4), (9 * MSS4, MSS4)]
    flags = [tcp_parts(kernel_finish(f))["flags"] for f in frames]
    assert flags == [ACK | CWR, ACK, ACK | PSH | FIN]


def split_cases():
    """(name, segments, expected runs) for every rule that ends a run."""
    mss = MSS4
    base = segments_of(False, payload_of(10 * mss), mss, seq=0, flags=ACK | PSH)

    def mutate(i, **tcp):
        parts = tcp_parts(base[i])
        fields = dict(ack=parts["ack"], flags=parts["flags"], window=parts["window"], options=parts["options"])
        fields.update(tcp)
        p = tcp_packet(False, parts["payload"], parts["seq"], ident=0x1234 + i, **fields)
        return base[:i] + [p] + base[i + 1 :]

    full = [(0, 10 * mss)]
    yield "in-order", base, full
    yield "gap", base[:4] + base[5:], [(0, 4 * mss), (5 * mss, 5 * mss)]
    yield "reordered", base[:4] + [base[5], base[4]] + base[6:], [(0, 4 * mss), (5 * mss, mss), (4 * mss, mss), (6 * mss, 4 * mss)]
    yield "duplicate", base[:5] + [base[4]] + base[5:], [(0, 5 * mss), (4 * mss, 6 * mss)]
    yield "ack", mutate(4, ack=1), [(0, 4 * mss), (4 * mss, mss), (5 * mss, 5 * mss)]
    yield "window", mutate(4, window=9), [(0, 4 * mss), (4 * mss, mss), (5 * mss, 5 * mss)]
    yield "options", mutate(4, options=timestamps(1001)), [(0, 4 * mss), (4 * mss, mss), (5 * mss, 5 * mss)]
    yield "psh", mutate(4, flags=ACK | PSH), [(0, 5 * mss), (5 * mss, 5 * mss)]
    yield "urg", mutate(4, flags=ACK | URG), [(0, 4 * mss), (4 * mss, mss), (5 * mss, 5 * mss)]
    yield "ece", mutate(4, flags=ACK | ECE), [(0, 4 * mss), (4 * mss, mss), (5 * mss, 5 * mss)]
    yield "syn", mutate(0, flags=SYN | ACK), [(0, mss), (mss, 9 * mss)]
    # a shorter middle segment ends the run after itself
    data = payload_of(10 * mss)
    short = tcp_packet(False, data[4 * mss : 4 * mss + 100], 4 * mss, flags=ACK)
    rest = segments_of(False, data[4 * mss + 100 :], mss, seq=4 * mss + 100, flags=ACK | PSH)
    yield "short", base[:4] + [short] + rest, [(0, 4 * mss + 100), (4 * mss + 100, 6 * mss - 100)]
    # a longer segment after a full run cannot join it
    longer = segments_of(False, data[4 * mss : 8 * mss], 2 * mss, seq=4 * mss, flags=ACK)
    yield "longer", base[:4] + longer, [(0, 4 * mss), (4 * mss, 4 * mss)]
    # a pure ACK of the same flow is written alone, in order
    pure = tcp_packet(False, b"", 4 * mss, flags=ACK)
    yield "pure-ack", base[:4] + [pure] + base[4:], [(0, 4 * mss), (4 * mss, 0), (4 * mss, 6 * mss)]
    tos = bytearray(base[4])
    tos[1] = 0x03  # ECN CE
    struct.pack_into("!H", tos, 10, 0)
    struct.pack_into("!H", tos, 10, rfc1071(tos[:20]))
    yield "tos", base[:4] + [bytes(tos)] + base[5:], [(0, 4 * mss), (4 * mss, mss), (5 * mss, 5 * mss)]


SPLITS = list(split_cases())


@pytest.mark.parametrize("name,segments,expected", SPLITS, ids=[s[0] for s in SPLITS])
def test_rules_that_end_a_run(name, segments, expected):
    frames = coalesce(segments)
    assert runs(frames) == expected
    for f in frames:
        p = kernel_finish(f)
        parts = tcp_parts(p)
        assert parts["payload"] == payload_of(10 * MSS4)[parts["seq"] : parts["seq"] + len(parts["payload"])]


def test_run_never_grows_past_64_kb():
    mss = 1000
    payload = payload_of(130 * mss)
    segments = []
    for k in range(0, 130 * mss, 60 * mss):  # three TSO reads, same headers: one stream
        segments += segments_of(False, payload[k : k + 60 * mss], mss, seq=k, flags=ACK)
    frames = coalesce(segments)
    total = 0
    for f in frames:
        p = check_written_frame(f)
        assert len(p) <= 65535
        parts = tcp_parts(p)
        assert parts["seq"] == total
        assert parts["payload"] == payload[total : total + len(parts["payload"])]
        total += len(parts["payload"])
    assert total == len(payload)
    assert runs(frames) == [(0, 65 * mss), (65 * mss, 65 * mss)]  # 52 + 65 * 1000 <= 65535 < 52 + 66 * 1000


@pytest.mark.parametrize("other", ["sport", "dport", "src", "dst", "tunnel"])
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_other_flows_and_tunnels_are_never_merged(other, v6):
    mss = MSS6 if v6 else MSS4
    a = segments_of(v6, payload_of(6 * mss, 1), mss, seq=0, flags=ACK | PSH)
    b = segments_of(v6, payload_of(6 * mss, 2), mss, seq=0, flags=ACK | PSH)  # same seqs on purpose
    if other in ("sport", "dport"):
        b = segments_of(v6, payload_of(6 * mss, 2), mss, seq=0, flags=ACK | PSH, **{other: 1234})
    elif other in ("src", "dst"):
        offset = (8 if other == "src" else 24) if v6 else (12 if other == "src" else 16)
        moved = []
        for p in b:
            p = bytearray(p)
            p[offset + 3] ^= 0x40
            if not v6:
                struct.pack_into("!H", p, 10, 0)
                struct.pack_into("!H", p, 10, rfc1071(p[:20]))
            moved.append(bytes(p))
        b = moved
    sink = Sink()
    c = offload.Coalescer(sink)
    for x, y in zip(a, b):
        c.add(x, "tunnel-a")
        c.add(y, "tunnel-b" if other == "tunnel" else "tunnel-a")
    c.flush()
    assert len(sink.frames) == 2
    by_payload = {}
    for f in sink.frames:
        parts = tcp_parts(check_written_frame(f))
        by_payload[parts["payload"]] = f
    assert set(by_payload) == {payload_of(6 * mss, 1), payload_of(6 * mss, 2)}


def real_tunnels():
    """Two core.Tunnel objects, as PacketHandlingModule hands them to the Coalescer."""
    from cyphonic import crypto
    from cyphonic.core import tunnel as core

    peer = core.PeerInfo("cn.cyphonic.test", ipaddress.IPv4Address("10.64.0.3"), ipaddress.IPv6Address("fd00:64::3"))
    path = core.Path(0xA001, "TunnelRequestToCN", False, peer, ("192.0.2.1", 4500), bytes(32))
    return [
        core.Tunnel(path, i, i + 1, ("192.0.2.1", 4500), crypto.DataCipher(bytes(32), bytes(32)), 0.0) for i in (1, 2)
    ]


def test_coalescer_works_with_the_products_tunnel_objects():
    """A run keyed by a real core.Tunnel (a mutable dataclass: compared by
    value, unhashable): two tunnels with equal state stay apart."""
    a, b = real_tunnels()
    b.local_index = b.remote_index = 1  # equal fields, another tunnel
    mss = MSS4
    segments = segments_of(False, payload_of(6 * mss), mss, seq=0, flags=ACK | PSH)
    sink = Sink()
    c = offload.Coalescer(sink)
    for s in segments:
        c.add(s, a)
        c.add(s, b)
    c.flush()
    assert runs(sink.frames) == [(0, 6 * mss), (0, 6 * mss)]


@pytest.mark.parametrize("case", ["ipv6-traffic-class", "ipv4-options-tos"])
def test_an_ecn_mark_is_never_merged_away(case):
    """GRO's IP rules: another traffic class (IPv6) or TOS (IPv4 with
    options) ends the run, so a CE mark reaches the receiver's TCP (it was
    lost before db4d827)."""
    mss = MSS4
    payload = payload_of(6 * mss)
    v6 = case.startswith("ipv6")
    opts = b"" if v6 else b"\x01\x01\x01\x00"
    segments = []
    for i in range(6):
        marked = i == 3
        segments.append(
            tcp_packet(v6, payload[i * mss : (i + 1) * mss], i * mss, flags=ACK, ident=i,
                       tc=3 if v6 and marked else 0, tos=3 if not v6 and marked else 0, ip_options=opts)
        )
    frames = coalesce(segments)
    ce = []
    for f in frames:
        p = kernel_finish(f)
        ecn = (struct.unpack_from("!I", p)[0] >> 20) & 3 if v6 else p[1] & 3
        if ecn == 3:
            ce.append(tcp_parts(p)["payload"])
    assert ce == [payload[3 * mss : 4 * mss]], "the CE-marked segment must not be merged into an unmarked frame"


def test_tcp_data_offset_below_five_does_not_crash_the_coalescer():
    """Two in-sequence segments with a 16-byte "TCP header" used to be merged
    and then crash _emit with struct.error (before db4d827): written as is."""
    def short_header(seq: int) -> bytes:
        th = struct.pack("!HHIIBBH", 40000, 5201, seq, 1, 4 << 4, ACK, 100)  # 16 bytes: no checksum field
        return ipv4_header(TCP, len(th) + 200) + th + bytes(200)

    sink = Sink()
    c = offload.Coalescer(sink)
    c.add(short_header(0), "t")
    c.add(short_header(200), "t")  # in sequence: the two would be merged
    c.flush()
    assert [f[VNET.size :] for f in sink.frames] == [short_header(0), short_header(200)]


def test_flush_holds_nothing_back():
    mss = MSS4
    payload = payload_of(8 * mss)
    segments = segments_of(False, payload, mss, seq=0, flags=ACK)
    sink = Sink()
    c = offload.Coalescer(sink)
    for s in segments[:4]:
        c.add(s, "t")
    assert sink.frames == []  # held until the end of the batch
    c.flush()
    assert runs(sink.take()) == [(0, 4 * mss)]
    c.flush()
    assert sink.take() == []
    for s in segments[4:]:  # the continuation starts a new run: nothing survived the flush
        c.add(s, "t")
    c.flush()
    assert runs(sink.take()) == [(4 * mss, 4 * mss)]
    c.flush()
    assert sink.take() == []


def test_other_packets_are_written_alone_by_the_end_of_the_batch():
    sink = Sink()
    c = offload.Coalescer(sink)
    udp = udp_packet(True, b"datagram")
    icmp = ipv4_header(ICMP, 8) + b"\x08\0\xf7\xff\0\0\0\0"
    for p in (udp, b"\x99junk", icmp):
        c.add(p, "t")
    c.flush()
    expected = [offload.single_frame(udp), offload.PLAIN_HEADER + b"\x99junk", offload.single_frame(icmp)]
    assert sorted(sink.take()) == sorted(expected)


# --- fuzz ------------------------------------------------------------------------------------


FILL = bytes(range(251)) * 270  # > 64 KB of cheap, non-repeating-per-word filler


@st.composite
def valid_frames(draw, max_gso: int = 9000) -> bytes:
    """A TSO or USO read, any size and segment size (possibly past the segment limit)."""
    v6 = draw(st.booleans())
    start = draw(st.integers(0, 250))
    size = draw(st.integers(0, 66000))
    if draw(st.booleans()):
        payload = FILL[start : start + min(size, 65535 - (72 if v6 else 52))]
        packet = tcp_packet(v6, payload, draw(st.integers(0, 2**32 - 1)), flags=draw(st.integers(0, 255)))
        return tso_frame(packet, draw(st.integers(1, max_gso)))
    payload = FILL[start : start + min(size, 65535 - (48 if v6 else 28))]
    return uso_frame(udp_packet(v6, payload), draw(st.integers(1, max_gso)))


@st.composite
def mutated(draw, frames) -> bytes:
    frame = bytearray(draw(frames))
    for _ in range(draw(st.integers(1, 6))):
        # mostly the headers: vnet, IP, L4
        position = draw(st.one_of(st.integers(0, 100), st.integers(0, max(0, len(frame) - 1))))
        if position < len(frame):
            frame[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        frame = frame[: draw(st.integers(0, len(frame)))]
    return bytes(frame)


FRAMES = st.one_of(st.binary(max_size=200), mutated(valid_frames()), valid_frames())



@FUZZ
@given(frame=FRAMES)
@example(frame=with_vnet(good_tso(), gso_size=0))
@example(frame=with_vnet(good_tso(size=60000), gso_size=1))
def test_segment_raises_only_parse_error(frame):
    try:
        segments = offload.segment(frame)
    except ParseError:
        return
    packet = frame[VNET.size :]
    _flags, gso_type, _hdr_len, gso_size, _start, _offset = VNET.unpack_from(frame)
    if gso_type & ~GSO_ECN == GSO_NONE:
        assert segments == [packet]
        return
    l3, proto = l3_of(packet)
    header = l3 + (8 if proto == UDP else (packet[l3 + 12] >> 4) * 4)
    assert len(segments) == -(-(len(packet) - header) // gso_size) <= 257
    assert all(len(s) <= header + gso_size and s[:l3 + 4] != b"" for s in segments)
    assert b"".join(s[header:] for s in segments) == packet[header:]


@FUZZ
@given(packet=st.one_of(st.binary(max_size=200), mutated(valid_frames()).map(lambda f: f[VNET.size :])))
def test_finish_checksum_and_single_frame_never_raise(packet):
    assert len(offload.finish_checksum(packet)) == len(packet)
    frame = offload.single_frame(packet)
    assert len(frame) == len(packet) + VNET.size
    if frame[: VNET.size] == offload.PLAIN_HEADER:
        assert frame[VNET.size :] == packet


@st.composite
def received_runs(draw) -> list[bytes]:
    """What a receive batch hands the coalescer: segments of a few reads,
    some lost, duplicated, swapped or with a header byte changed, and junk."""
    out: list[bytes] = []
    for _ in range(draw(st.integers(1, 3))):
        frame = draw(valid_frames(max_gso=3000))
        try:
            segments = offload.segment(frame)
        except ParseError:
            continue
        out += segments[: draw(st.integers(0, 12))]
    for _ in range(draw(st.integers(0, 6))):
        if not out:
            break
        i = draw(st.integers(0, len(out) - 1))
        action = draw(st.sampled_from(["drop", "dup", "swap", "byte", "cut"]))
        if action == "drop":
            del out[i]
        elif action == "dup":
            out.insert(draw(st.integers(0, len(out))), out[i])
        elif action == "swap":
            j = draw(st.integers(0, len(out) - 1))
            out[i], out[j] = out[j], out[i]
        elif action == "byte":
            p = bytearray(out[i])
            if p:
                p[draw(st.integers(0, min(len(p) - 1, 80)))] = draw(st.integers(0, 255))
            out[i] = bytes(p)
        else:
            out[i] = out[i][: draw(st.integers(0, len(out[i])))]
    if draw(st.booleans()):
        out.insert(draw(st.integers(0, len(out))), draw(st.binary(max_size=80)))
    return out


@FUZZ
@given(packets=received_runs(), tunnels=st.lists(st.sampled_from("ab"), min_size=40, max_size=40))
def test_coalescer_never_raises_and_writes_every_byte_once(packets, tunnels):
    sink = Sink()
    c = offload.Coalescer(sink)
    for p, t in zip(packets, tunnels * 10):
        c.add(p, t)
    c.flush()
    # every packet comes out once: a merged frame carries one header for k segments
    written = 0
    for f in sink.frames:
        flags, gso_type, hdr_len, gso_size, start, offset = VNET.unpack_from(f)
        body = f[VNET.size :]
        written += len(body)
        if gso_type != GSO_NONE:
            check_written_frame(f)
            k = -(-(len(body) - hdr_len) // gso_size)
            written += (k - 1) * hdr_len
    assert written == sum(len(p) for p in packets)
    before = len(sink.frames)
    c.flush()
    assert len(sink.frames) == before  # nothing held after a flush


@FUZZ
@given(frame=valid_frames(), cut=st.sampled_from(["gso_size", "segments"]))
def test_impossible_sizes_in_a_real_header_are_refused(frame, cut):
    assume(VNET.unpack_from(frame)[1] != GSO_NONE)
    if cut == "gso_size":
        with pytest.raises(ParseError):
            offload.segment(with_vnet(frame, gso_size=0))
        return
    packet = frame[VNET.size :]
    l3, proto = l3_of(packet)
    header = l3 + (8 if proto == UDP else (packet[l3 + 12] >> 4) * 4)
    assume(len(packet) - header >= 2000)  # thousands of one-byte segments
    with pytest.raises(ParseError):
        offload.segment(with_vnet(frame, gso_size=1))
