"""Traffic as the apps behind a TUN make it, and the byte-exact check of what arrives.

A `TcpFlow` is one direction of a bulk TCP connection: each `write` is one
TUN read's worth, a TSO super-packet (or a pure ACK) for the offload path,
the same bytes cut into MTU-sized packets with full checksums for the plain
one. A `UdpFlow` sends with UDP_SEGMENT (USO) or one datagram at a time.
The link tells each flow the fate of every segment (`fate`); every packet
written to the receiving TUN goes through `receive`, and `verify` checks
that every byte not lost arrived exactly once and no lost one did.
"""

from __future__ import annotations

import bisect
import itertools
import random
import struct
from array import array

from cyphonic.core import tunnel as core
from tests.support.packets import (
    ACK,
    CWR,
    ECE,
    FIN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP_L4,
    PSH,
    RST,
    SYN,
    TCP,
    UDP,
    URG,
    partial_frame,
    tcp_packet,
    timestamps,
    tso_frame,
    udp_packet,
    uso_frame,
    with_full_checksum,
)

TUN_MTU = 1420  # inner packets; + 29 bytes of capsule: one 1500-byte underlay datagram


# The byte stream of every TCP flow: byte at offset x is PATTERN2[x % P]
# (P prime, so a segment landing at a wrong offset shows).
P = 1_000_003
PATTERN = random.Random(20260101).randbytes(P)
PATTERN2 = PATTERN + PATTERN[:70000]


class Meta:
    """What one outer datagram carries (the sender knows; the link decides its fate)."""

    __slots__ = ("flow", "start", "length")

    def __init__(self, flow, start: int, length: int) -> None:
        self.flow, self.start, self.length = flow, start, length


class Flow:
    """One direction of an application's traffic between two virtual IPs."""

    def __init__(
        self, rng: random.Random, v6: bool, src: core.PeerInfo, dst: core.PeerInfo, sport: int, dport: int
    ) -> None:
        self.rng, self.v6 = rng, v6
        self.src = (src.vip6 if v6 else src.vip4).packed
        self.dst = (dst.vip6 if v6 else dst.vip4).packed
        self.sport, self.dport = sport, dport
        self.l3 = 40 if v6 else 20


class TcpFlow(Flow):
    """One direction of a bulk TCP connection, as the TUN sees it."""

    def __init__(
        self, rng: random.Random, v6: bool, src: core.PeerInfo, dst: core.PeerInfo, sport: int, dport: int
    ) -> None:
        super().__init__(rng, v6, src, dst, sport, dport)
        self.header = self.l3 + 32  # timestamps on
        self.mss = TUN_MTU - self.header
        self.label = rng.getrandbits(20)
        self.isn = (2**32 - rng.randrange(1, 300_000)) & 0xFFFFFFFF  # wraps early in the run
        self.ack, self.window = rng.getrandbits(32), 502
        self.tsval, self.tsecr = rng.getrandbits(32), rng.getrandbits(32)
        self.ident = rng.getrandbits(16)
        self.sent = 0
        self.starts: list[int] = []  # offset of each write ...
        self.heads: list[tuple] = []  # ... its (ack, window, tsval, tsecr) ...
        self.idents: list[int] = []  # ... and the IPv4 ID of its first segment
        self.psh_ends: set[int] = set()
        self.cwr_starts: set[int] = set()
        self.delivered: list[tuple[int, int]] = []
        self.lost: list[tuple[int, int]] = []
        self.expected = 0
        self.acks_sent = self.acks_expected = self.acks_delivered = 0

    @property
    def key(self):
        return (self.src, self.dst, TCP, self.sport, self.dport)

    def _packet(self, seq: int, flags: int, payload: bytes, ident: int) -> bytes:
        return tcp_packet(
            self.v6,
            payload,
            seq,
            src=self.src,
            dst=self.dst,
            ident=ident,
            flow=self.label,
            ack=self.ack,
            flags=flags,
            window=self.window,
            options=timestamps(self.tsval, self.tsecr),
            sport=self.sport,
            dport=self.dport,
        )

    def write(self, plain: bool) -> tuple[list[bytes], list[Meta]]:
        """One TUN read's worth: a TSO super-packet (or pure ACK) for the
        offload path, the same bytes cut into MTU-sized packets for the plain one."""
        rng = self.rng
        if rng.random() < 0.3:
            self.ack = (self.ack + rng.randrange(1, 200_000)) & 0xFFFFFFFF
        if rng.random() < 0.5:
            self.tsval = (self.tsval + 1) & 0xFFFFFFFF
        if rng.random() < 0.05:
            self.window = rng.randrange(100, 65535)
        seq = (self.isn + self.sent) & 0xFFFFFFFF
        if rng.random() < 0.03:  # a pure ACK (window update)
            packet = self._packet(seq, ACK, b"", self.ident)
            self.ident += 1
            self.acks_sent += 1
            if plain:
                return [with_full_checksum(packet)], [Meta(self, -1, 0)]
            return [partial_frame(packet)], [Meta(self, -1, 0)]
        most = (65535 - self.header) // self.mss
        r = rng.random()  # TSO autosizing: full 64 KB reads when busy, a few segments otherwise
        k = most if r < 0.4 else rng.randrange(1, 9) if r < 0.8 else rng.randrange(1, most + 1)
        size = k * self.mss
        tail = rng.random() < 0.3
        if tail:
            size -= rng.randrange(self.mss)
        flags = ACK | (PSH if rng.random() < (0.7 if tail else 0.3) else 0) | (CWR if rng.random() < 0.01 else 0)
        start = self.sent
        off = start % P
        payload = PATTERN2[off : off + size]
        self.starts.append(start)
        self.heads.append((self.ack, self.window, self.tsval, self.tsecr))
        self.idents.append(self.ident)
        if flags & PSH:
            self.psh_ends.add(start + size)
        if flags & CWR:
            self.cwr_starts.add(start)
        self.sent += size
        metas = [Meta(self, start + i, min(self.mss, size - i)) for i in range(0, size, self.mss)]
        if not plain:
            packet = self._packet(seq, flags, payload, self.ident)
            self.ident += len(metas)
            return [tso_frame(packet, self.mss)], metas  # GSO_NONE if it is one segment
        packets = []
        last = len(metas) - 1
        for i, m in enumerate(metas):
            f = flags
            if i != last:
                f &= ~PSH
            if i:
                f &= ~CWR
            off = m.start % P
            packet = self._packet((self.isn + m.start) & 0xFFFFFFFF, f, PATTERN2[off : off + m.length], self.ident)
            self.ident += 1
            packets.append(with_full_checksum(packet))
        return packets, metas

    def fate(self, meta: Meta, delivered: bool) -> None:
        if meta.start < 0:
            self.acks_expected += delivered
        elif delivered:
            self.expected += meta.length
        else:
            self.lost.append((meta.start, meta.start + meta.length))

    def receive(self, packet: bytes, l3: int, vnet: tuple | None) -> None:
        sport, dport, seq, ack, doff, flags, window = struct.unpack_from("!HHIIBBH", packet, l3)
        header = l3 + (doff >> 4) * 4
        assert header == self.header
        kind, tsval, tsecr = struct.unpack_from("!4sII", packet, l3 + 20)
        assert kind == b"\x01\x01\x08\x0a"
        rel = (seq - self.isn) & 0xFFFFFFFF
        length = len(packet) - header
        assert flags & (FIN | SYN | RST | URG | ECE) == 0 and flags & ACK
        if vnet is not None:
            _f, gso_type, hdr_len, gso_size, _s, _o = vnet
            if gso_type == GSO_NONE:
                assert length <= self.mss
            else:
                assert gso_type == (GSO_TCPV6 if self.v6 else GSO_TCPV4)
                assert (hdr_len, gso_size) == (self.header, self.mss)
                assert length > self.mss
        else:
            assert length <= self.mss
        if length == 0:
            assert rel <= self.sent
            self.acks_delivered += 1
            return
        end = rel + length
        assert end <= self.sent, "bytes never sent"
        off = rel % P
        assert packet[header:] == PATTERN2[off : off + length], f"wrong bytes at offset {rel}"
        # the headers are those of every write the frame spans
        first = bisect.bisect_right(self.starts, rel) - 1
        last = bisect.bisect_left(self.starts, end) - 1
        for i in range(first, last + 1):
            assert self.heads[i] == (ack, window, tsval, tsecr), "segments with other headers merged"
            # it starts on a segment boundary, and only full segments come before its last
            assert (self.starts[i] - rel if i > first else rel - self.starts[i]) % self.mss == 0, "short segment merged"
        if not self.v6:
            ident = (self.idents[first] + (rel - self.starts[first]) // self.mss) & 0xFFFF
            assert struct.unpack_from("!H", packet, 4)[0] == ident, "IPv4 ID"
        assert bool(flags & PSH) == (end in self.psh_ends)
        assert bool(flags & CWR) == (rel in self.cwr_starts)
        if flags & CWR:
            assert length <= self.mss
        self.delivered.append((rel, end))

    def verify(self) -> int:
        """Every byte that was not lost arrived exactly once; none that was lost did."""
        delivered = sorted(self.delivered)
        for (_, b), (c, d) in itertools.pairwise(delivered):
            assert b <= c, f"bytes {c}..{min(b, d)} delivered twice"
        total = sum(b - a for a, b in delivered)
        assert total == self.expected
        lost = sorted(self.lost)
        assert self.expected + sum(b - a for a, b in lost) == self.sent
        i = 0
        for a, b in delivered:
            while i < len(lost) and lost[i][1] <= a:
                i += 1
            assert i == len(lost) or lost[i][0] >= b, "a lost segment's bytes were delivered"
        assert self.acks_delivered == self.acks_expected
        return total


class UdpFlow(Flow):
    """A UDP app sending with UDP_SEGMENT (USO) or one datagram at a time."""

    def __init__(
        self, rng: random.Random, v6: bool, src: core.PeerInfo, dst: core.PeerInfo, sport: int, dport: int
    ) -> None:
        super().__init__(rng, v6, src, dst, sport, dport)
        self.gso = rng.randrange(512, TUN_MTU - self.l3 - 8 + 1)
        self.label = rng.getrandbits(20)
        self.ident = rng.getrandbits(16)
        self.lengths = array("H")  # datagram n's payload length
        self.expected = bytearray()  # 1 = should arrive
        self.arrived = bytearray()

    @property
    def key(self):
        return (self.src, self.dst, UDP, self.sport, self.dport)

    def _payload(self, n: int, length: int) -> bytes:
        off = (n * 7919) % P
        return n.to_bytes(8, "big") + PATTERN2[off : off + length - 8]

    def _packet(self, payload: bytes, ident: int) -> bytes:
        return udp_packet(
            self.v6,
            payload,
            src=self.src,
            dst=self.dst,
            ident=ident,
            flow=self.label,
            sport=self.sport,
            dport=self.dport,
        )

    def write(self, plain: bool) -> tuple[list[bytes], list[Meta]]:
        rng = self.rng
        if rng.random() < 0.3:
            count, sizes = 1, [rng.randrange(8, self.gso + 1)]
        else:
            count = rng.randrange(2, min(45, (65535 - self.l3 - 8) // self.gso) + 1)
            sizes = [self.gso] * count
            if rng.random() < 0.5:
                sizes[-1] = rng.randrange(8, self.gso + 1)
        first = len(self.lengths)
        metas, payloads = [], []
        for i, size in enumerate(sizes):
            n = first + i
            self.lengths.append(size)
            self.expected.append(0)
            self.arrived.append(0)
            payloads.append(self._payload(n, size))
            metas.append(Meta(self, n, size))
        if plain:
            out = []
            for p in payloads:
                packet = self._packet(p, self.ident)
                self.ident += 1
                out.append(with_full_checksum(packet))
            return out, metas
        packet = self._packet(b"".join(payloads), self.ident)
        self.ident += count
        return [uso_frame(packet, self.gso) if count > 1 else partial_frame(packet)], metas

    def fate(self, meta: Meta, delivered: bool) -> None:
        self.expected[meta.start] = delivered

    def receive(self, packet: bytes, l3: int, vnet: tuple | None) -> int:
        """One UDP packet written to the TUN: one datagram, or (a USO frame
        from receive coalescing) several that the kernel cuts at gso_size."""
        sport, dport, length, _check = struct.unpack_from("!HHHH", packet, l3)
        assert length == len(packet) - l3
        body = packet[l3 + 8 :]
        if vnet is not None and vnet[1] == GSO_UDP_L4:
            _f, _type, hdr_len, gso_size, _s, _o = vnet
            assert hdr_len == l3 + 8 and len(body) > gso_size
            datagrams = [body[k : k + gso_size] for k in range(0, len(body), gso_size)]
        else:
            assert vnet is None or vnet[1:4] == (GSO_NONE, 0, 0)
            datagrams = [body]
        for d in datagrams:
            n = int.from_bytes(d[:8], "big")
            assert n < len(self.lengths), "a datagram never sent"
            assert len(d) == self.lengths[n], "datagram of the wrong size"
            assert d == self._payload(n, len(d)), f"wrong bytes in datagram {n}"
            assert not self.arrived[n], f"datagram {n} delivered twice"
            self.arrived[n] = 1
        return len(datagrams)

    def verify(self) -> int:
        assert self.arrived == self.expected
        return sum(self.lengths[n] for n in range(len(self.lengths)) if self.arrived[n])


def flows_from(rng: random.Random, src: core.PeerInfo, dst: core.PeerInfo, base: int) -> list:
    return [
        TcpFlow(rng, False, src, dst, base + 1, 5201),
        TcpFlow(rng, False, src, dst, base + 2, 5201),
        TcpFlow(rng, True, src, dst, base + 3, 5201),
        UdpFlow(rng, False, src, dst, base + 4, 5202),
        UdpFlow(rng, True, src, dst, base + 5, 5202),
    ]
