"""`cyphonic.core.offload.Coalescer`: received TCP segments glued back into TUN writes, sans I/O.

In-order segments of one flow and one tunnel become one GSO frame again;
every rule GRO has for ending a run (gap, reorder, other headers, flags,
ECN, a short or longer segment, 64 KB) ends it here too, and other flows,
tunnels and packets are never merged. Each written frame is checked as the
kernel takes it (`tests.support.coalescer.check_written_frame`).
"""

from __future__ import annotations

import ipaddress
import struct

import pytest

from cyphonic.core import offload
from tests.support.checksum import rfc1071
from tests.support.coalescer import Sink, check_written_frame, coalesce, runs, segments_of
from tests.support.packets import (
    ACK,
    CWR,
    ECE,
    FIN,
    GSO_NONE,
    ICMP,
    MSS4,
    MSS6,
    PSH,
    SYN,
    TCP,
    URG,
    VNET,
    ipv4_header,
    kernel_finish,
    payload_of,
    tcp_packet,
    tcp_parts,
    timestamps,
    tso_frame,
    udp_packet,
    with_full_checksum,
)


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
    yield (
        "reordered",
        base[:4] + [base[5], base[4]] + base[6:],
        [(0, 4 * mss), (5 * mss, mss), (4 * mss, mss), (6 * mss, 4 * mss)],
    )
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
    for x, y in zip(a, b, strict=True):
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
            tcp_packet(
                v6,
                payload[i * mss : (i + 1) * mss],
                i * mss,
                flags=ACK,
                ident=i,
                tc=3 if v6 and marked else 0,
                tos=3 if not v6 and marked else 0,
                ip_options=opts,
            )
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
