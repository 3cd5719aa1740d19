"""Driving the product's `offload.segment` and `Coalescer` in tests, and checking what they write.

A frame the Coalescer writes to the TUN is checked as the kernel takes it:
NEEDS_CSUM finished first (`kernel_finish`), then lengths and checksums
verified with the independent oracle.
"""

from __future__ import annotations

import struct

from cyphonic.core import offload
from tests.support.checksum import ipv4_header_ok, l3_of, l4_checksum_ok
from tests.support.packets import (
    ACK,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP_L4,
    NEEDS_CSUM,
    UDP,
    VNET,
    kernel_finish,
    tcp_packet,
    tcp_parts,
    tso_frame,
)


def segments_of(v6: bool, payload: bytes, gso_size: int, seq: int = 1000, flags: int = ACK, **kw) -> list[bytes]:
    """`segment` of one super-packet, as the sender's PacketHandlingModule cuts it."""
    return offload.segment(tso_frame(tcp_packet(v6, payload, seq, flags=flags, **kw), gso_size))


class Sink:
    """Collects the frames a Coalescer writes."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def __call__(self, frame: bytes) -> None:
        self.frames.append(frame)

    def take(self) -> list[bytes]:
        out, self.frames = self.frames, []
        return out


def coalesce(packets: list[bytes], tunnel: object = "t") -> list[bytes]:
    """The frames written for one receive batch of `packets` from one tunnel."""
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
