"""`finish_checksum` and `single_frame` of cyphonic.core.offload, sans I/O.

The plain path's receiver completes a partial TCP/UDP checksum in software
(`finish_checksum`); the offload path writes one packet with NEEDS_CSUM and
leaves the sum to the kernel (`single_frame`), which `kernel_finish` does
here as the kernel would. Every checksum is verified with the independent
RFC 1071 oracle (`tests.support.checksum`), not the product's fast one.
"""

from __future__ import annotations

import struct

import pytest

from cyphonic.core import offload
from tests.support.checksum import l4_checksum_ok, pseudo_header, rfc1071, rfc1071_sum
from tests.support.packets import (
    GSO_NONE,
    ICMP,
    NEEDS_CSUM,
    TCP,
    UDP,
    VNET,
    ipv4_header,
    ipv6_header,
    kernel_finish,
    payload_of,
    tcp_packet,
    udp_packet,
    with_full_checksum,
    with_partial_checksum,
)

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
        packet[field : field + 2] = b"\xa5\x5a"
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
