"""`cyphonic.core.offload.segment`: a TUN read with TSO/USO cut into MTU-sized packets, sans I/O.

GSO super-packets are built the way a TUN with TSO/USO hands them over
(virtio_net_hdr + one IP packet of up to 64 KB, L4 checksum left partial;
`tests.support.packets`), cut with `segment`, and every segment's checksums
verified with the independent RFC 1071 oracle (`tests.support.checksum`).
Impossible sizes and unsupported frames are refused with ParseError
(DESIGN section 10, issue "Data plane at kernel-offload speed").
"""

from __future__ import annotations

import struct

import pytest

from cyphonic.core import offload
from cyphonic.errors import ParseError
from tests.support.checksum import ipv4_header_ok, l4_checksum_ok
from tests.support.packets import (
    ACK,
    CWR,
    ECE,
    FIN,
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP_L4,
    ICMP,
    MSS4,
    MSS6,
    NEEDS_CSUM,
    PSH,
    TCP,
    VNET,
    good_tso,
    ipv4_header,
    payload_of,
    tcp_packet,
    tcp_parts,
    tso_frame,
    udp_packet,
    uso_frame,
    with_vnet,
)

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
@pytest.mark.parametrize(
    "size,gso_size", [(1, 1392), (1392, 1392), (1393, 1392), (40 * 1372 + 7, 1372), (65535 - 48, 1200), (999, 2)]
)
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
        pytest.param(good_tso()[: VNET.size + 30], id="tcp-header-cut"),
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
