"""The compiled coalescer (cyphonic/fastpath/coalesce.c) against `offload.Coalescer`, frame for frame.

The same adds and flushes go to both: the Python one collects what its
`write` callback gets, the C one writes to one end of an AF_UNIX datagram
socketpair (a TUN stand-in that keeps frame boundaries). The two lists of
frames must be identical, bytes and order. The streams are what a receive
batch hands the coalescer: TCP flows of two tunnels (IPv4 and IPv6, runs of
equal segments, short and long ones, every flag, header changes, gaps,
reordering, duplicates, 64 KB runs, more flows than MAX_FLOWS), UDP, IPv4
options, fragments and junk, with flushes anywhere.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cyphonic.core import offload
from tests.support.checksum import rfc1071, rfc1071_sum
from tests.support.coalescer import Sink, check_written_frame
from tests.support.dataplane import force_buffers
from tests.support.packets import (
    ACK,
    CWR,
    DST4,
    DST6,
    ECE,
    FIN,
    GSO_NONE,
    GSO_TCPV4,
    ICMP,
    PSH,
    RST,
    SRC4,
    SRC6,
    SYN,
    TCP,
    URG,
    VNET,
    ipv4_header,
    ipv6_header,
    tcp_packet,
    timestamps,
    udp_packet,
)

try:
    from cyphonic.fastpath import _fastpath
except ImportError as e:  # the install step always builds it: its absence is a failure, not a skip
    pytest.fail(
        f"cyphonic.fastpath._fastpath is not built ({e}); run `python -m cyphonic.fastpath.build`", pytrace=False
    )

ffi, lib = _fastpath.ffi, _fastpath.lib

FUZZ = settings(
    max_examples=int(os.environ.get("CYPHONIC_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Python keys flows by id(tunnel), C by a 64-bit stand-in: two that differ
# only in the top bit, so a comparison of fewer bits shows
TUNNELS = (object(), object())
KEYS = (0x5A5A_0000_0000_0001, 0xDA5A_0000_0000_0001)

FILL = bytes(range(251)) * 300  # > 70 KB of payload that shows a byte out of place


class Pair:
    """The Python and the C coalescer, fed the same calls; `step` returns what each wrote."""

    def __init__(self, fd: int | None = None) -> None:
        self.sink = Sink()
        self.py = offload.Coalescer(self.sink)
        self.tun, self.app = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for s in (self.tun, self.app):
            s.setblocking(False)
            force_buffers(s)
        self.c = ffi.gc(lib.fp_coalescer_new(self.tun.fileno() if fd is None else fd), lib.fp_coalescer_free)
        assert self.c != ffi.NULL
        self.buffer = bytearray(1 << 18)
        self.failures = 0

    def __enter__(self) -> Pair:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.tun.close()
        self.app.close()

    def add(self, packet, tunnel: int = 0) -> tuple[list[bytes], list[bytes]]:
        self.py.add(bytes(packet), TUNNELS[tunnel])
        self.failures += lib.fp_coalescer_add(
            self.c, ffi.from_buffer("unsigned char[]", packet), len(packet), KEYS[tunnel]
        )
        return self.sink.take(), self.received()

    def flush(self) -> tuple[list[bytes], list[bytes]]:
        self.py.flush()
        self.failures += lib.fp_coalescer_flush(self.c)
        return self.sink.take(), self.received()

    def received(self) -> list[bytes]:
        out = []
        while True:
            try:
                n = self.app.recv_into(self.buffer)
            except BlockingIOError:
                return out
            out.append(bytes(self.buffer[:n]))

    def run(self, ops: list) -> list[bytes]:
        """Every op of a stream; the frames (the same from both) of all of them."""
        frames = []
        for i, op in enumerate(ops):
            py, c = self.flush() if op is None else self.add(*op)
            assert self.failures == 0, f"op {i}: TUN write failed, errno {lib.fp_coalescer_errno(self.c)}"
            if py != c:
                pytest.fail(f"op {i} ({describe_op(op)}): {difference(py, c)}")
            frames += py
        return frames


def describe_op(op) -> str:
    if op is None:
        return "flush"
    packet, tunnel = op
    n = len(packet)
    l3 = 20 if n >= 40 and packet[0] == 0x45 else 40 if n >= 60 and packet[0] >> 4 == 6 else 0
    if l3 and packet[9 if l3 == 20 else 6] == TCP:
        ports, seq, ack, doff, flags, window = struct.unpack_from("!4sIIBBH", packet, l3)
        return (
            f"tunnel {tunnel}: {n} bytes v{packet[0] >> 4} TCP ports {ports.hex()} seq {seq} ack {ack} "
            f"doff {doff >> 4} flags {flags:#04x} window {window}"
        )
    return f"tunnel {tunnel}: {n} bytes {bytes(packet[:12]).hex()}"


def difference(py: list[bytes], c: list[bytes]) -> str:
    if len(py) != len(c):
        return f"Python wrote {len(py)} frames {[len(f) for f in py]}, C {len(c)} {[len(f) for f in c]}"
    for k, (a, b) in enumerate(zip(py, c, strict=True)):
        if a != b:
            if len(a) != len(b):
                return f"frame {k}: {len(a)} bytes from Python, {len(b)} from C"
            at = next(j for j in range(len(a)) if a[j] != b[j])
            return f"frame {k} differs at byte {at}: Python {a[: at + 4].hex()}, C {b[: at + 4].hex()}"
    return "?"


def compare(ops: list) -> list[bytes]:
    with Pair() as pair:
        return pair.run([*ops, None])


# --- packets ------------------------------------------------------------------------------------


class FlowState:
    """One direction of a TCP connection as it arrives: headers that may change between segments."""

    def __init__(self, *, v6: bool, tunnel: int, sport: int, dport: int, reverse: bool, mss: int, seq: int) -> None:
        self.v6, self.tunnel, self.mss, self.seq = v6, tunnel, mss, seq
        src, dst = (SRC6, DST6) if v6 else (SRC4, DST4)
        self.src, self.dst = (dst, src) if reverse else (src, dst)
        self.sport, self.dport = sport, dport
        self.ack, self.window, self.options = 77777, 502, timestamps()
        self.tos = self.tc = 0
        self.ttl, self.label = 64, 0x12345
        self.df, self.evil = True, False
        self.ident = 0x1234
        self.reserved = 0  # the low bits of the data offset byte (AE and reserved)
        self.l3 = 40 if v6 else 20

    def packet(self, seq: int, size: int, flags: int = ACK) -> bytes:
        self.ident += 1
        off = seq % 251
        p = bytearray(
            tcp_packet(
                self.v6,
                FILL[off : off + size],
                seq & 0xFFFFFFFF,
                src=self.src,
                dst=self.dst,
                ident=self.ident,
                tos=self.tos,
                tc=self.tc,
                flow=self.label,
                ack=self.ack,
                flags=flags,
                window=self.window,
                options=self.options,
                sport=self.sport,
                dport=self.dport,
            )
        )
        struct.pack_into("!H", p, self.l3 + 16, (seq * 7) & 0xFFFF)  # a stale checksum, as a sender leaves it
        p[self.l3 + 12] |= self.reserved
        if self.v6:
            p[7] = self.ttl
        else:
            p[6] = (0x40 if self.df else 0) | (0x80 if self.evil else 0)
            p[8] = self.ttl
            p[10:12] = b"\0\0"
            struct.pack_into("!H", p, 10, rfc1071(p[:20]))
        return bytes(p)

    def next(self, size: int, flags: int = ACK) -> bytes:
        p = self.packet(self.seq, size, flags)
        self.seq = (self.seq + size) & 0xFFFFFFFF
        return p


OPTIONS = [
    timestamps(),
    b"",
    b"\x01\x01\x01\x01",
    b"\x02\x04\x05\xb4",  # MSS
    b"\x01\x01\x05\x22" + bytes(range(32)),  # 40 bytes: SACK blocks
]
MSS = [1448, 1, 2, 7, 100, 536, 1368, 9000, 21000, 32768]
# "run" first (and often): Hypothesis shrinks towards it
KINDS = ["run"] * 4 + ["short", "long", "psh", "psh", "flag", "ack", "change", "gap", "back", "swap", "dup"]
KINDS += ["bad_doff", "trunc", "mutate"]
FLAGS = [FIN, SYN, RST, URG, ECE, CWR, FIN | PSH, SYN | ACK, 0, -1]
CHANGES = ["ack", "window", "tos", "ttl", "tc", "label", "tsval", "options", "df", "evil", "ident", "reserved"]


@st.composite
def flow_states(draw, index: int, many: bool) -> FlowState:
    # a small port pool: some flows share a key (on one tunnel or both)
    sport = 40000 + (index if many else draw(st.integers(0, 3)))
    fs = FlowState(
        v6=draw(st.booleans()),
        tunnel=draw(st.integers(0, 1)),
        sport=sport,
        dport=draw(st.sampled_from([5201, 443])),
        reverse=draw(st.booleans()),
        mss=draw(st.sampled_from(MSS[:6] if many else MSS)),
        seq=draw(st.one_of(st.integers(0, 2**32 - 1), st.integers(2**32 - 70000, 2**32 - 1))),
    )
    fs.options = draw(st.sampled_from(OPTIONS))
    return fs


def flow_packets(draw, fs: FlowState, events: int, longest_run: int) -> list[bytes]:
    out: list[bytes] = []
    mss = fs.mss
    for _ in range(events):
        kind = draw(st.sampled_from(KINDS))
        if kind == "run":
            out += [fs.next(mss) for _ in range(draw(st.integers(1, longest_run)))]
        elif kind == "short":
            out.append(fs.next(draw(st.integers(1, max(1, mss - 1)))))
        elif kind == "long":
            out.append(fs.next(mss + draw(st.integers(1, 100))))
        elif kind == "psh":
            out.append(fs.next(draw(st.sampled_from([mss, max(1, mss // 2)])), ACK | PSH))
        elif kind == "flag":
            flags = draw(st.sampled_from(FLAGS))
            out.append(fs.next(mss, ACK | flags if flags > 0 else 0 if flags < 0 else ACK))
        elif kind == "ack":
            out.append(fs.next(0, ACK | draw(st.sampled_from([0, PSH, FIN, ECE]))))
        elif kind == "change":
            change(draw, fs, draw(st.sampled_from(CHANGES)))
            out += [fs.next(mss) for _ in range(draw(st.integers(1, 3)))]
        elif kind == "gap":
            fs.seq = (fs.seq + draw(st.integers(1, 3 * mss))) & 0xFFFFFFFF
            out.append(fs.next(mss))
        elif kind == "back":  # a retransmission
            out.append(fs.packet(fs.seq - draw(st.integers(1, 3)) * mss, mss))
        elif kind == "swap":
            a, b = fs.next(mss), fs.next(mss)
            out += [b, a]
        elif kind == "dup":
            out += out[-1:] or [fs.next(mss)]
        elif kind == "bad_doff":
            p = bytearray(fs.packet(fs.seq, draw(st.integers(0, 20))))
            p[fs.l3 + 12] = draw(st.sampled_from([0, 1, 4, 15])) << 4 | (p[fs.l3 + 12] & 0x0F)
            out.append(bytes(p))
        elif kind == "trunc":
            p = fs.next(mss)
            out.append(p[: draw(st.integers(0, len(p) - 1))])
        else:  # "mutate": one byte of the headers
            p = bytearray(fs.next(mss))
            p[draw(st.integers(0, min(len(p) - 1, fs.l3 + 40)))] = draw(st.integers(0, 255))
            out.append(bytes(p))
    return out


def change(draw, fs: FlowState, field: str) -> None:
    if field == "ack":
        fs.ack = (fs.ack + draw(st.integers(1, 2**32 - 1))) & 0xFFFFFFFF
    elif field == "window":
        fs.window = draw(st.integers(0, 65535))
    elif field == "tos":
        fs.tos = draw(st.sampled_from([1, 2, 3, 0x10, 0xB8]))  # ECN bits too
    elif field == "ttl":
        fs.ttl = draw(st.integers(0, 255))
    elif field == "tc":
        fs.tc = draw(st.integers(1, 255))
    elif field == "label":
        fs.label = draw(st.integers(0, 2**20 - 1))
    elif field == "tsval":
        fs.options = timestamps(draw(st.integers(0, 2**32 - 1)))
    elif field == "options":
        fs.options = draw(st.sampled_from(OPTIONS))
    elif field == "df":
        fs.df = not fs.df
    elif field == "evil":  # the reserved fragment bit: not a fragment, still mergeable
        fs.evil = not fs.evil
    elif field == "ident":
        fs.ident = draw(st.integers(0, 65535))
    else:  # "reserved"
        fs.reserved = draw(st.integers(0, 15))


def ipv4_tcp_with_options(size: int) -> bytes:
    opts = b"\x01\x01\x01\x00"
    return tcp_packet(False, FILL[:size], 5000, ip_options=opts)


def fragment(draw) -> bytes:
    p = bytearray(draw(st.sampled_from([tcp_packet(False, FILL[:1000]), udp_packet(False, FILL[:1000])])))
    struct.pack_into("!H", p, 6, draw(st.sampled_from([0x2000, 0x2000 | 185, 185, 0x6000, 1, 0xBFFF])))
    return bytes(p)


@st.composite
def extras(draw) -> bytes:
    """What is never merged: UDP, other protocols, IPv4 options, fragments, junk."""
    kind = draw(st.sampled_from(["udp", "ipopts", "fragment", "icmp", "v6other", "junk", "cut"]))
    if kind == "udp":
        p = udp_packet(draw(st.booleans()), FILL[: draw(st.integers(0, 3000))])
        return p[: draw(st.sampled_from([len(p), 20, 27, 40, 47, 50]))]
    if kind == "ipopts":
        p = ipv4_tcp_with_options(draw(st.integers(0, 2000)))
        return p[: draw(st.sampled_from([len(p), 24, 43, 44]))]
    if kind == "fragment":
        return fragment(draw)
    if kind == "icmp":
        return ipv4_header(ICMP, 64) + FILL[:64]
    if kind == "v6other":
        nh = draw(st.sampled_from([0, 43, 44, 58, 59]))
        return ipv6_header(nh, 100) + FILL[:100]
    if kind == "cut":  # looks like a TCP flow's packet, too short for its headers
        v6 = draw(st.booleans())
        return tcp_packet(v6, FILL[:100], options=b"")[: draw(st.integers(20, 59))]
    junk = bytearray(draw(st.binary(max_size=80)))
    first = draw(st.sampled_from([None, 0x45, 0x46, 0x4F, 0x44, 0x40, 0x60, 0x65, 0x50, 0x00]))
    if junk and first is not None:
        junk[0] = first
    if len(junk) > 9 and draw(st.booleans()):
        junk[9] = TCP
        if len(junk) > 6:
            junk[6] = TCP  # the IPv6 next header
    return bytes(junk)


class Stream(list):
    """A stream's ops, shown one line each: a falsifying example stays readable."""

    def __repr__(self) -> str:
        return "Stream([\n" + "".join(f"  {describe_op(op)}\n" for op in self) + "])"


@st.composite
def streams(draw) -> Stream:
    """Adds ((packet, tunnel)) and flushes (None) of a few receive batches."""
    many = draw(st.integers(0, 4)) == 4  # more flows than a coalescer holds
    nflows = draw(st.integers(65, 80)) if many else draw(st.integers(1, 6))
    flows = [draw(flow_states(i, many)) for i in range(nflows)]
    if many:  # each flow opens with a segment it can hold, so that all are held at once
        queues = [[fs.next(fs.mss), *flow_packets(draw, fs, draw(st.integers(0, 2)), 3)] for fs in flows]
    else:
        queues = [flow_packets(draw, fs, draw(st.integers(1, 10)), max(2, min(50, 150_000 // fs.mss))) for fs in flows]
    ops = Stream()
    if many and draw(st.integers(0, 3)) < 3:
        # round robin: every flow held at once
        depth = max(len(q) for q in queues)
        for k in range(depth):
            for fs, q in zip(flows, queues, strict=True):
                if k < len(q):
                    ops.append((q[k], fs.tunnel))
            if draw(st.integers(0, 3)) == 0:
                ops.append(None)
        return ops
    heads = [0] * nflows
    while any(h < len(q) for h, q in zip(heads, queues, strict=True)):
        i = draw(st.integers(0, nflows - 1))
        while heads[i] == len(queues[i]):
            i = (i + 1) % nflows
        k = draw(st.integers(1, 64))
        ops += [(p, flows[i].tunnel) for p in queues[i][heads[i] : heads[i] + k]]
        heads[i] += k
        if draw(st.integers(0, 2)) == 0:
            ops.append((draw(extras()), draw(st.integers(0, 1))))
        if draw(st.integers(0, 100 if many else 5)) == 0:  # many flows: seldom, or they are never all held
            ops.append(None)
    return ops


# --- the differential tests ----------------------------------------------------------------------


@FUZZ
@given(ops=streams())
def test_c_writes_what_python_writes(ops):
    compare(ops)


@FUZZ
@given(packets=st.lists(st.one_of(extras(), st.binary(max_size=120)), max_size=20), tunnel=st.integers(0, 1))
def test_single_frames_match(packets, tunnel):
    compare([(p, tunnel) for p in packets])


# --- examples -------------------------------------------------------------------------------------


def flow(v6=False, mss=1448, seq=1000, sport=40000, reverse=False, **kw) -> FlowState:
    fs = FlowState(v6=v6, tunnel=0, sport=sport, dport=5201, reverse=reverse, mss=mss, seq=seq)
    for k, v in kw.items():
        setattr(fs, k, v)
    return fs


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_a_run_becomes_one_gso_frame(v6):
    fs = flow(v6, seq=2**32 - 3000)  # the sequence number wraps inside the run
    (frame,) = compare([(fs.next(1448), 0) for _ in range(10)] + [(fs.next(500, ACK | PSH), 0)])
    flags, gso_type, hdr_len, gso_size, start, offset = VNET.unpack_from(frame)
    assert (gso_type, hdr_len, gso_size) == (4 if v6 else GSO_TCPV4, fs.l3 + 32, 1448)
    check_written_frame(frame)


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_runs_end_at_max_super(v6):
    fs = flow(v6)
    frames = compare([(fs.next(1448), 0) for _ in range(100)])
    lengths = [len(f) - VNET.size for f in frames]
    assert all(n <= offload.MAX_SUPER for n in lengths) and len(frames) == 3
    assert lengths[0] + 1448 > offload.MAX_SUPER


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_a_run_may_fill_max_super_exactly(v6):
    fs = flow(v6)
    header = fs.l3 + 32
    full, last = divmod(offload.MAX_SUPER - header, 1448)
    frames = compare([(fs.next(1448), 0) for _ in range(full)] + [(fs.next(last), 0), (fs.next(1), 0)])
    assert [len(f) - VNET.size for f in frames] == [offload.MAX_SUPER, header + 1]


def test_a_packet_longer_than_max_super_is_held_alone():
    fs = flow()

    def big() -> bytes:  # its IP length field cannot say how long it is; the coalescer never looks
        p = fs.packet(fs.seq, 1000) + FILL[:69000]
        fs.seq += 70000
        return p

    frames = compare([(big(), 0), (fs.next(100), 0), (big(), 0)])
    assert [VNET.unpack_from(f)[1] for f in frames] == [GSO_NONE] * 3


def test_psh_closes_the_run_and_is_set_in_the_merged_header():
    fs = flow()
    ops = [(fs.next(1448), 0), (fs.next(1448), 0), (fs.next(1448, ACK | PSH), 0), (fs.next(1448), 0)]
    first, second = compare(ops)
    assert first[VNET.size + 20 + 13] == ACK | PSH
    assert VNET.unpack_from(second)[1] == GSO_NONE


@pytest.mark.parametrize("doff", [0, 4, 15])
def test_a_bad_data_offset_writes_the_held_flow_first_then_the_packet_plain(doff):
    fs = flow(options=b"")
    bad = bytearray(fs.packet(fs.seq, 10))
    bad[20 + 12] = doff << 4
    frames = compare([(fs.next(1448), 0), (fs.next(1448), 0), (bytes(bad), 0), (fs.next(1448), 0)])
    assert len(frames) == 3
    assert frames[1] == offload.PLAIN_HEADER + bad


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\x45",
        bytes(19),
        b"\x45" + bytes(30),
        b"\x44" + bytes(60),  # IHL below 5
        b"\x4f" + bytes(40),  # IHL beyond the packet
        b"\x65" + bytes(60),
        b"\x75" + bytes(60),
        ipv4_tcp_with_options(100),
        ipv4_tcp_with_options(0)[:43],
        ipv6_header(0, 100) + FILL[:100],
        udp_packet(True, FILL[:7])[:47],
        udp_packet(False, b""),
        tcp_packet(True, b"", options=b"")[:59],
    ],
    ids=lambda p: f"{len(p)}:{p[:1].hex()}",
)
def test_what_is_never_merged(packet):
    compare([(packet, 0), (packet, 1), (packet, 0)])


@pytest.mark.parametrize("bits", [0x2000, 0x00B9, 0x20B9, 0x8000, 0xC000, 0x4000, 0x0000])
def test_fragment_bits(bits):
    fs = flow()
    ops = []
    for _ in range(3):
        p = bytearray(fs.next(1448))
        struct.pack_into("!H", p, 6, bits)
        ops.append((bytes(p), 0))
    compare(ops)


def test_two_tunnels_and_two_directions_are_never_merged():
    a, b = flow(), flow()
    c = flow(reverse=True)
    ops = []
    for _ in range(4):
        ops += [(a.next(1448), 0), (b.next(1448), 1), (c.next(1448), 0)]
    assert len(compare(ops)) == 3


def test_header_changes_end_a_run():
    fs = flow()
    ops = [(fs.next(1448), 0), (fs.next(1448), 0)]
    for field, value in [("ack", 1), ("window", 9), ("tos", 2), ("ttl", 3), ("options", b""), ("df", False)]:
        setattr(fs, field, value)
        ops += [(fs.next(1448), 0), (fs.next(1448), 0)]
    frames = compare(ops)
    assert len(frames) == 6  # a DF change does not end a run (GRO does not compare it either)


def with_last_address_word(packets: list[bytes], word: int, l3: int) -> list[bytes]:
    """`packets` with the last 16 bits of the destination address replaced."""
    return [p[: l3 - 2] + struct.pack("!H", word) + p[l3:] for p in packets]


@pytest.mark.parametrize("count", [1, 2], ids=["single", "merged"])
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_a_pseudo_header_summing_to_zero_is_written_as_0xffff(v6, count):
    """ones_sum reports a nonzero sum that is 0 modulo 0xFFFF as 0xFFFF, never 0: so must C."""
    fs = flow(v6, options=b"")
    l3 = fs.l3
    packets = with_last_address_word([fs.next(100) for _ in range(count)], 0, l3)
    addresses = packets[0][8 if v6 else 12 : l3]
    rest = rfc1071_sum(addresses + struct.pack("!II", count * 100 + 20, TCP))
    packets = with_last_address_word(packets, 0xFFFF - rest, l3)  # now the pseudo-header sums to 0xFFFF
    (frame,) = compare([(p, 0) for p in packets])
    assert struct.unpack_from("!H", frame, VNET.size + l3 + 16)[0] == 0xFFFF


def test_an_ipv4_header_summing_to_zero_gets_checksum_0():
    fs = flow(options=b"", df=False)
    packets = with_last_address_word([fs.next(100), fs.next(100)], 0, 20)
    head = bytearray(packets[0][:20])
    head[2:4] = struct.pack("!H", 20 + 20 + 2 * 100)  # the merged total length
    head[10:12] = b"\0\0"
    packets = with_last_address_word(packets, 0xFFFF - rfc1071_sum(head), 20)
    (frame,) = compare([(p, 0) for p in packets])
    assert frame[VNET.size + 10 : VNET.size + 12] == b"\0\0"


def test_max_flows_emits_the_oldest_held_flow_first():
    flows = [flow(sport=1000 + i) for i in range(offload.MAX_FLOWS + 1)]
    ops = [(fs.next(1448), 0) for fs in flows]
    with Pair() as pair:
        pair.run(ops[: offload.MAX_FLOWS])
        assert pair.py._flows and len(pair.py._flows) == offload.MAX_FLOWS
        (oldest,) = pair.run(ops[offload.MAX_FLOWS :])
        assert struct.unpack_from("!H", oldest, VNET.size + 20)[0] == 1000
        # a segment joining flow 1 keeps its place; flow 2, restarted after a SYN, goes to the end
        pair.run([(flows[1].next(1448), 0), (flows[2].next(1448, ACK | SYN), 0), (flows[2].next(1448), 0)])
        frames = pair.run([None])
    ports = [struct.unpack_from("!H", f, VNET.size + 20)[0] for f in frames]
    assert ports == [1001, *range(1003, 1000 + offload.MAX_FLOWS + 1), 1002]


def test_the_callers_buffer_may_be_reused():
    fs = flow()
    packets = [fs.next(1448) for _ in range(3)]
    buffer = bytearray(2000)
    with Pair() as pair:
        for p in packets:
            buffer[: len(p)] = p
            pair.py.add(p, TUNNELS[0])
            lib.fp_coalescer_add(pair.c, ffi.from_buffer("unsigned char[]", buffer), len(p), KEYS[0])
            buffer[:] = bytes(len(buffer))
        py, c = pair.flush()
    assert py == c and len(c) == 1


def test_write_failures_are_counted_and_the_coalescer_goes_on():
    fs = flow()
    with Pair() as pair:
        fd = os.open(os.devnull, os.O_RDONLY)  # write() fails with EBADF
        try:
            co = ffi.gc(lib.fp_coalescer_new(fd), lib.fp_coalescer_free)

            def add(p: bytes) -> int:
                return lib.fp_coalescer_add(co, p, len(p), KEYS[0])

            assert add(udp_packet(False, b"x")) == 1
            assert lib.fp_coalescer_errno(co) == errno.EBADF
            assert [add(fs.next(1448)) for _ in range(3)] == [0, 0, 0]
            assert add(fs.next(1448, ACK | SYN)) == 2  # the held run, then the SYN
            assert lib.fp_coalescer_flush(co) == 0
            assert [add(fs.next(1448)) for _ in range(2)] == [0, 0]
            assert lib.fp_coalescer_flush(co) == 1
            held = [fs.next(1448) for _ in range(3)]
            assert [add(p) for p in held] == [0, 0, 0]
            os.dup2(pair.tun.fileno(), fd)  # the same fd, writable now
            assert lib.fp_coalescer_flush(co) == 0
            assert lib.fp_coalescer_errno(co) == errno.EBADF  # the last failure's
            for p in held:
                pair.py.add(p, TUNNELS[0])
            pair.py.flush()
            assert pair.received() == pair.sink.take() != []
            pair.app.close()  # a peer gone: ECONNREFUSED, still counted
            assert add(udp_packet(True, b"x")) == 1
            assert lib.fp_coalescer_errno(co) == errno.ECONNREFUSED
        finally:
            os.close(fd)
