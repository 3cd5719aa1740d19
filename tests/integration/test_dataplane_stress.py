"""Both data paths under load, loss, reordering, duplicates and bad input.

Issue "Data plane at kernel-offload speed": "a stress test moves 10^6
packets through each path (TCP and UDP, IPv4 and IPv6, with reordering and
loss injected) and checks every byte"; "a receive batch may mix forged,
replayed, truncated and foreign datagrams: each bad one is counted and
dropped alone, the rest of the batch is delivered".

Two PacketHandlingModules ("mn" and "cn") share a real pair of Tunnels made
by the handshake (core.Initiator / core.respond). Only the OS edges are
replaced: each TUN is one end of an AF_UNIX datagram socketpair (the
module's own `tun_reader` reads it, its `os.write`s land on the other end),
and each UDP socket is a stand-in that cuts UDP_SEGMENT sends the way the
kernel does and hands the datagrams to an in-memory link that loses,
reorders and duplicates them before `receive()` + `flush()` (what
`socket_reader` does per GRO batch). The offload path gets frames as a TUN
with TSO/USO hands them over; the plain path gets MTU-sized packets with
full checksums, as a TUN without offloads does.

Packets per path: CYPHONIC_STRESS_PACKETS (default 10^5 in the normal
suite; 10^6 is the issue's figure: run it with CYPHONIC_STRESS_PACKETS=1000000).
"""

from __future__ import annotations

import bisect
import collections
import errno
import ipaddress
import os
import random
import socket
import struct
import sys
import time
from array import array

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cyphonic import crypto
from cyphonic.core import offload
from cyphonic.core import tunnel as core
from cyphonic.core.replay import WINDOW
from cyphonic.kernel import batch as batch_io
from cyphonic.node.daemon import DATA_TYPES
from cyphonic.node.packet import PacketHandlingModule
from cyphonic.wire.tunnel import CAPSULE_HEADER_STRUCT

STRESS_PACKETS = int(os.environ.get("CYPHONIC_STRESS_PACKETS", "100000"))
FUZZ = settings(
    max_examples=int(os.environ.get("CYPHONIC_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

VNET = struct.Struct("<BBHHHH")
NEEDS_CSUM = 1
GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4 = 0, 1, 4, 5
TCP, UDP = 6, 17
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 1, 2, 4, 8, 16, 32, 64, 128
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33

TUN_MTU = 1420  # inner packets; + 29 bytes of capsule: one 1500-byte underlay datagram
MAX_OUTER = 1472

MN = core.PeerInfo("mn.cyphonic.test", ipaddress.IPv4Address("10.64.0.2"), ipaddress.IPv6Address("fd00:64::2"))
CN = core.PeerInfo("cn.cyphonic.test", ipaddress.IPv4Address("10.64.0.3"), ipaddress.IPv6Address("fd00:64::3"))
MN_ADDR, CN_ADDR = ("192.0.2.10", 4500), ("198.51.100.20", 4500)

# The byte stream of every TCP flow: byte at offset x is PATTERN2[x % P]
# (P prime, so a segment landing at a wrong offset shows).
P = 1_000_003
PATTERN = random.Random(20260101).randbytes(P)
PATTERN2 = PATTERN + PATTERN[:70000]


# --- an independent ones'-complement sum (64-bit words, folded) ----------------------------------


def csum(data) -> int:
    """RFC 1071 sum of `data` as a big-endian 16-bit value (fast: 8 bytes a word)."""
    n = len(data)
    if n % 8:
        data = bytes(data) + bytes(8 - n % 8)
    words = array("Q")
    words.frombytes(data)
    s = sum(words)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    if sys.byteorder == "little":
        s = ((s & 0xFF) << 8) | (s >> 8)
    return s


def add(a: int, b: int) -> int:
    s = a + b
    return (s & 0xFFFF) + (s >> 16)


def pseudo_sum(packet, l4_length: int, proto: int) -> int:
    if packet[0] >> 4 == 4:
        return csum(bytes(packet[12:20]) + struct.pack("!BBH", 0, proto, l4_length))
    return csum(bytes(packet[8:40]) + struct.pack("!IxxxB", l4_length, proto))


def full_checksum(packet: bytearray, l3: int, proto: int) -> None:
    field = l3 + (16 if proto == TCP else 6)
    packet[field : field + 2] = b"\0\0"
    value = ~add(pseudo_sum(packet, len(packet) - l3, proto), csum(memoryview(packet)[l3:])) & 0xFFFF
    struct.pack_into("!H", packet, field, value or (0xFFFF if proto == UDP else 0))


def partial_checksum(packet: bytearray, l3: int, proto: int) -> None:
    struct.pack_into("!H", packet, l3 + (16 if proto == TCP else 6), pseudo_sum(packet, len(packet) - l3, proto))


def l4_verifies(packet, l3: int, proto: int) -> bool:
    return add(pseudo_sum(packet, len(packet) - l3, proto), csum(memoryview(packet)[l3:])) == 0xFFFF


def ipv4_header(src: bytes, dst: bytes, proto: int, total: int, ident: int) -> bytearray:
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident & 0xFFFF, 0x4000, 64, proto, 0, src, dst))
    struct.pack_into("!H", h, 10, ~csum(h) & 0xFFFF)
    return h


def ipv6_header(src: bytes, dst: bytes, proto: int, payload: int, label: int) -> bytearray:
    return bytearray(struct.pack("!IHBB16s16s", (6 << 28) | label, payload, proto, 64, src, dst))


# --- traffic as the apps behind each TUN make it ------------------------------------------------


class Meta:
    """What one outer datagram carries (the sender knows; the link decides its fate)."""

    __slots__ = ("flow", "start", "length")

    def __init__(self, flow, start: int, length: int) -> None:
        self.flow, self.start, self.length = flow, start, length


class TcpFlow:
    """One direction of a bulk TCP connection, as the TUN sees it."""

    def __init__(self, rng: random.Random, v6: bool, src: core.PeerInfo, dst: core.PeerInfo, sport: int, dport: int) -> None:
        self.rng, self.v6 = rng, v6
        self.src = (src.vip6 if v6 else src.vip4).packed
        self.dst = (dst.vip6 if v6 else dst.vip4).packed
        self.sport, self.dport = sport, dport
        self.l3 = 40 if v6 else 20
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

    def _packet(self, seq: int, flags: int, payload: bytes, ident: int) -> bytearray:
        options = struct.pack("!BBBBII", 1, 1, 8, 10, self.tsval, self.tsecr)
        l4 = 32 + len(payload)
        if self.v6:
            ip = ipv6_header(self.src, self.dst, TCP, l4, self.label)
        else:
            ip = ipv4_header(self.src, self.dst, TCP, 20 + l4, ident)
        tcp = struct.pack("!HHIIBBHHH", self.sport, self.dport, seq, self.ack, 8 << 4, flags, self.window, 0, 0)
        return bytearray(ip + tcp + options + payload)

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
                full_checksum(packet, self.l3, TCP)
                return [bytes(packet)], [Meta(self, -1, 0)]
            partial_checksum(packet, self.l3, TCP)
            return [VNET.pack(NEEDS_CSUM, GSO_NONE, 0, 0, self.l3, 16) + packet], [Meta(self, -1, 0)]
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
            partial_checksum(packet, self.l3, TCP)
            if size > self.mss:
                vnet = VNET.pack(NEEDS_CSUM, GSO_TCPV6 if self.v6 else GSO_TCPV4, self.header, self.mss, self.l3, 16)
            else:
                vnet = VNET.pack(NEEDS_CSUM, GSO_NONE, 0, 0, self.l3, 16)
            return [vnet + packet], metas
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
            full_checksum(packet, self.l3, TCP)
            packets.append(bytes(packet))
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
        for (a, b), (c, d) in zip(delivered, delivered[1:]):
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


class UdpFlow:
    """A UDP app sending with UDP_SEGMENT (USO) or one datagram at a time."""

    def __init__(self, rng: random.Random, v6: bool, src: core.PeerInfo, dst: core.PeerInfo, sport: int, dport: int) -> None:
        self.rng, self.v6 = rng, v6
        self.src = (src.vip6 if v6 else src.vip4).packed
        self.dst = (dst.vip6 if v6 else dst.vip4).packed
        self.sport, self.dport = sport, dport
        self.l3 = 40 if v6 else 20
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

    def _packet(self, payload: bytes, ident: int) -> bytearray:
        l4 = 8 + len(payload)
        if self.v6:
            ip = ipv6_header(self.src, self.dst, UDP, l4, self.label)
        else:
            ip = ipv4_header(self.src, self.dst, UDP, 20 + l4, ident)
        return bytearray(ip + struct.pack("!HHHH", self.sport, self.dport, l4, 0) + payload)

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
                full_checksum(packet, self.l3, UDP)
                out.append(bytes(packet))
            return out, metas
        packet = self._packet(b"".join(payloads), self.ident)
        self.ident += count
        partial_checksum(packet, self.l3, UDP)
        if count > 1:
            vnet = VNET.pack(NEEDS_CSUM, GSO_UDP_L4, self.l3 + 8, self.gso, self.l3, 6)
        else:
            vnet = VNET.pack(NEEDS_CSUM, GSO_NONE, 0, 0, self.l3, 6)
        return [vnet + packet], metas

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


# --- the two nodes, their TUNs and the link between them ----------------------------------------


class FakeUdp:
    """A node's UDP socket: collects what the module sends, cutting a
    UDP_SEGMENT send into datagrams as the kernel does (and refusing what
    udp_send_skb refuses)."""

    MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS before Linux 6.6 (the product's MAX_GSO_SEGMENTS)

    def __init__(self) -> None:
        self.datagrams: list[bytes] = []
        self.calls = 0

    def sendto(self, data, address) -> int:
        self.calls += 1
        if len(data) > 65507:
            raise OSError(errno.EMSGSIZE, "message too long")
        self.datagrams.append(bytes(data))
        return len(data)

    def sendmsg(self, buffers, ancdata=(), flags=0, address=None) -> int:
        self.calls += 1
        data = b"".join(bytes(b) for b in buffers)
        size = 0
        for level, kind, value in ancdata:
            if (level, kind) == (batch_io.SOL_UDP, batch_io.UDP_SEGMENT):
                size = struct.unpack("=H", value)[0]
        if len(data) > 65507:
            raise OSError(errno.EMSGSIZE, "message too long")
        if not size or len(data) <= size:
            self.datagrams.append(data)
            return len(data)
        if size > MAX_OUTER or len(data) > size * self.MAX_SEGMENTS:
            raise OSError(errno.EINVAL, "invalid UDP_SEGMENT send")
        self.datagrams += [data[k : k + size] for k in range(0, len(data), size)]
        return len(data)


def force_buffers(sock: socket.socket, size: int = 16 << 20) -> None:
    for force, plain in ((SO_SNDBUFFORCE, socket.SO_SNDBUF), (SO_RCVBUFFORCE, socket.SO_RCVBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)


class Node:
    def __init__(self, me: core.PeerInfo, address, tunnel: core.Tunnel, vnet: bool, udp=None) -> None:
        kernel, app = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for s in (kernel, app):
            s.setblocking(False)
            force_buffers(s)
        self.kernel, self.app = kernel, app
        self.me, self.address, self.tunnel = me, address, tunnel
        self.wire = FakeUdp() if udp is None else udp
        gso = vnet if udp is None else batch_io.gso_supported(udp)
        self.module = PacketHandlingModule(
            kernel.fileno(), {socket.AF_INET: self.wire, socket.AF_INET6: self.wire}, vnet=vnet, gso=gso
        )
        self.module.install(tunnel)

    def close(self) -> None:
        self.kernel.close()
        self.app.close()


def handshake(now: float) -> tuple[core.Tunnel, core.Tunnel]:
    """A real tunnel: Tunnel Request / Response, ephemeral X25519, End Keys."""
    key = crypto.random_key()
    mn_path = core.Path(0xA001, "TunnelRequestToCN", True, CN, CN_ADDR, key)
    cn_path = core.Path(0xA001, "TunnelRequestToCN", False, MN, MN_ADDR, key)
    initiator = core.Initiator(mn_path, MN, now)
    cn_tunnel, response = core.respond(cn_path, CN, initiator.request, MN_ADDR, now)
    mn_tunnel = initiator.accept_response(response, CN_ADDR, now)
    return mn_tunnel, cn_tunnel


@pytest.fixture
def pair(request):
    vnet = request.param == "offload"
    mn_tunnel, cn_tunnel = handshake(time.time())
    mn, cn = Node(MN, MN_ADDR, mn_tunnel, vnet), Node(CN, CN_ADDR, cn_tunnel, vnet)
    yield mn, cn
    mn.close()
    cn.close()


PATHS = pytest.mark.parametrize("pair", ["offload", "plain"], indirect=True)


def read_tun(node: Node) -> list[bytes]:
    """What the module wrote to its TUN since the last call."""
    out = []
    while True:
        try:
            out.append(node.app.recv(70000))
        except BlockingIOError:
            return out


def socket_batch(node: Node, datagrams: list[bytes], source, now: float) -> None:
    """One GRO batch, as NodeDaemon.socket_reader handles it."""
    for data in datagrams:
        if data and data[0] in DATA_TYPES:
            node.module.receive(data, source, now)
    node.module.flush()


class Checker:
    """Verifies every frame a receiving module writes to its TUN."""

    def __init__(self, flows, vnet: bool) -> None:
        self.flows = {f.key: f for f in flows}
        self.vnet = vnet
        self.frames = 0
        self.deep = 0
        self.tcp_frames = self.tcp_segments = self.udp_datagrams = 0

    def __call__(self, frame: bytes) -> None:
        self.frames += 1
        vnet = None
        if self.vnet:
            vnet = VNET.unpack_from(frame)
            packet = frame[VNET.size :]
        else:
            packet = frame
        version = packet[0] >> 4
        if version == 4:
            l3, proto = 20, packet[9]
            assert struct.unpack_from("!H", packet, 2)[0] == len(packet)
            assert csum(packet[:20]) == 0xFFFF, "IPv4 header checksum"
            assert packet[1] == 0 and packet[6] & 0x40 and packet[8] == 64
            addresses = packet[12:20]
            src, dst = addresses[:4], addresses[4:]
        else:
            assert version == 6
            l3, proto = 40, packet[6]
            assert struct.unpack_from("!H", packet, 4)[0] == len(packet) - 40
            assert packet[7] == 64
            src, dst = packet[8:24], packet[24:40]
        sport, dport = struct.unpack_from("!HH", packet, l3)
        flow = self.flows[(src, dst, proto, sport, dport)]
        if version == 6:
            assert struct.unpack_from("!I", packet)[0] == (6 << 28) | flow.label
        if vnet is not None:
            flags, _gso, _hdr, _size, start, offset = vnet
            # NEEDS_CSUM: the field holds the pseudo-header sum, so the sum
            # the kernel finishes from csum_start verifies
            assert flags == NEEDS_CSUM and (start, offset) == (l3, 16 if proto == TCP else 6)
            field = struct.unpack_from("!H", packet, start + offset)[0]
            assert field % 0xFFFF == pseudo_sum(packet, len(packet) - l3, proto) % 0xFFFF
            if self.frames % 61 == 0:  # and now and then the whole thing, as the kernel does it
                p = bytearray(packet)
                value = ~csum(memoryview(p)[start:]) & 0xFFFF
                struct.pack_into("!H", p, start + offset, value or 0xFFFF)
                assert l4_verifies(p, l3, proto)
                self.deep += 1
        else:
            assert l4_verifies(packet, l3, proto), "L4 checksum"
        if proto == TCP:
            flow.receive(packet, l3, vnet)
            self.tcp_frames += 1
            self.tcp_segments += max(1, -(-(len(packet) - flow.header) // flow.mss))
        else:
            self.udp_datagrams += flow.receive(packet, l3, vnet)


class Link:
    """One direction of the underlay: 1% loss, local reordering, duplicates
    (each must be dropped by the replay window) and, now and then, a
    datagram replayed from far behind the window."""

    LOSS, DUP, SWAP, OLD = 0.01, 0.01, 0.02, 0.05

    def __init__(self, rng: random.Random, sender: Node, receiver: Node, checker: Checker) -> None:
        self.rng, self.sender, self.receiver, self.checker = rng, sender, receiver, checker
        self.sent = self.lost = self.dups = self.old_replays = 0
        self.history: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=64)

    def carry(self, metas: list[Meta], now: float) -> None:
        datagrams = self.sender.wire.datagrams
        self.sender.wire.datagrams = []
        assert len(datagrams) == len(metas), "one sealed datagram per segment"
        rng = self.rng
        order, dups = [], []
        for d, m in zip(datagrams, metas):
            assert len(d) <= MAX_OUTER
            self.sent += 1
            if rng.random() < self.LOSS:
                self.lost += 1
                m.flow.fate(m, False)
                continue
            m.flow.fate(m, True)
            order.append(d)
            if rng.random() < self.DUP:
                dups.append(d)
            if rng.random() < 0.02:
                self.history.append((CAPSULE_HEADER_STRUCT.unpack_from(d)[2], d))
        for i in range(len(order) - 1):
            if rng.random() < self.SWAP:
                j = min(len(order) - 1, i + rng.randrange(1, 24))
                order[i], order[j] = order[j], order[i]
        for d in dups:  # before or after the original: one of the two is a replay
            order.insert(rng.randrange(len(order) + 1), d)
            self.dups += 1
        highest = self.receiver.tunnel.replay.highest
        if self.history and rng.random() < self.OLD and self.history[0][0] < highest - WINDOW - len(order):
            order.insert(rng.randrange(len(order) + 1), self.history.popleft()[1])
            self.old_replays += 1
        i = 0
        while i < len(order):
            n = rng.randrange(1, 65)  # a GRO read: up to ~64 datagrams
            socket_batch(self.receiver, order[i : i + n], self.sender.address, now)
            i += n
            for frame in read_tun(self.receiver):
                self.checker(frame)


def flows_from(rng: random.Random, src: core.PeerInfo, dst: core.PeerInfo, base: int) -> list:
    return [
        TcpFlow(rng, False, src, dst, base + 1, 5201),
        TcpFlow(rng, False, src, dst, base + 2, 5201),
        TcpFlow(rng, True, src, dst, base + 3, 5201),
        UdpFlow(rng, False, src, dst, base + 4, 5202),
        UdpFlow(rng, True, src, dst, base + 5, 5202),
    ]


async def feed(node: Node, frames: list[bytes]) -> None:
    """The kernel side of a TUN: the app's packets for the module to read;
    returns once the module's `tun_reader` has drained them."""
    for f in frames:
        while True:
            try:
                node.app.send(f)
                break
            except BlockingIOError:
                await trio.testing.wait_all_tasks_blocked()
    await trio.testing.wait_all_tasks_blocked()


def pump(node: Node, frames: list[bytes]) -> list[bytes]:
    """Run the module's `tun_reader` over `frames`; the datagrams it sent."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node.module.tun_reader)
            await feed(node, frames)
            nursery.cancel_scope.cancel()

    trio.run(main)
    out, node.wire.datagrams = node.wire.datagrams, []
    return out


# --- the stress run ---------------------------------------------------------------------------


@PATHS
async def test_stress_every_byte_checked(pair, nursery):
    """CYPHONIC_STRESS_PACKETS packets in total through one path: both
    directions, 2 TCP flows over IPv4, 1 over IPv6, 1 UDP flow per family,
    1% loss, local reordering, 1% duplicates and old replays on the link.
    Every byte that reaches a TUN is checked against what was sent."""
    mn, cn = pair
    vnet = mn.module.vnet
    rng = random.Random(0x5EED + vnet)
    up = flows_from(rng, MN, CN, 40000)  # mn -> cn
    down = flows_from(rng, CN, MN, 50000)  # cn -> mn
    links = {
        "up": Link(rng, mn, cn, Checker(up, vnet)),
        "down": Link(rng, cn, mn, Checker(down, vnet)),
    }
    nursery.start_soon(mn.module.tun_reader)
    nursery.start_soon(cn.module.tun_reader)
    weights = [3, 2, 3, 3, 3]
    started = time.perf_counter()
    total = 0
    while total < STRESS_PACKETS:
        for name, node, flows in (("up", mn, up), ("down", cn, down)):
            frames, metas = [], []
            for flow in rng.choices(flows, weights, k=rng.randrange(1, 4)):
                for _ in range(rng.randrange(1, 4)):  # back-to-back reads of one flow
                    f, m = flow.write(plain=not vnet)
                    frames += f
                    metas += m
            await feed(node, frames)
            links[name].carry(metas, time.time())
            total += len(metas)
    elapsed = time.perf_counter() - started
    nursery.cancel_scope.cancel()

    payload = 0
    for flow in up + down:
        payload += flow.verify()
    for link in links.values():
        receiver = link.receiver
        # nothing but the injected duplicates and old replays was dropped
        assert dict(receiver.module.drops.counts) == (
            {"replayed capsule": link.dups + link.old_replays} if link.dups + link.old_replays else {}
        )
        assert receiver.tunnel.rx_packets == link.sent - link.lost
        assert link.sender.tunnel.tx_packets == link.sent
        assert link.dups > 0 and link.lost > 0
        if vnet:  # UDP GSO: the segments of a read leave in one system call
            assert link.sender.wire.calls < link.sent / 4
        else:
            assert link.sender.wire.calls == link.sent
    sent = sum(link.sent for link in links.values())
    frames = sum(link.checker.frames for link in links.values())
    assert sent >= STRESS_PACKETS
    tcp_frames = sum(link.checker.tcp_frames for link in links.values())
    tcp_segments = sum(link.checker.tcp_segments for link in links.values())
    if vnet:
        # coalescing happened: far fewer TUN writes than TCP segments
        assert tcp_frames < tcp_segments / 4
        assert sum(link.checker.deep for link in links.values()) > 0
    else:
        assert tcp_frames == tcp_segments
    print(
        f"\n{'offload' if vnet else 'plain'} path: {sent} packets ({payload / 1e6:.0f} MB of payload) in "
        f"{elapsed:.1f} s, {frames} TUN writes ({tcp_segments} TCP segments in {tcp_frames}), lost {sum(l.lost for l in links.values())}, "
        f"duplicated {sum(l.dups for l in links.values())}, old replays {sum(l.old_replays for l in links.values())}"
    )


# --- a receive batch with bad datagrams among good ones --------------------------------------------


@PATHS
def test_bad_datagrams_in_a_batch_are_counted_and_the_rest_delivered(pair):
    mn, cn = pair
    vnet = mn.module.vnet
    rng = random.Random(7)
    while True:  # a bulk write of at least 6 segments, no CWR
        flow = TcpFlow(rng, False, MN, CN, 40001, 5201)
        frames, metas = flow.write(plain=not vnet)
        if len(metas) >= 6 and not flow.cwr_starts:
            break
    udp = UdpFlow(rng, True, MN, CN, 40002, 5202)
    good = pump(mn, frames)
    assert len(good) == len(metas)
    uframes, umetas = udp.write(plain=not vnet)
    ugood = pump(mn, uframes)

    # another tunnel's keys: a capsule that opens nowhere here
    other_mn, other_cn = handshake(time.time())
    other_mn.send_counter = 10**6  # fresh to cn's window: only the key is wrong
    foreign_key = other_mn.seal(core.CAPSULE, b"\x45" + bytes(39))
    forged_tag = bytearray(good[2])
    forged_tag[-1] ^= 1
    forged_body = bytearray(good[3])
    forged_body[40] ^= 0x80
    forged_counter = bytearray(good[1])
    struct.pack_into("<Q", forged_counter, 5, 10**9)  # a far-future counter that does not open
    own_index = struct.pack("<I", cn.tunnel.local_index)
    assert other_mn.remote_index != cn.tunnel.local_index
    wrong_index = bytearray(good[4])
    wrong_index[1:5] = struct.pack("<I", (cn.tunnel.local_index + 1) & 0xFFFFFFFF)
    spoof = bytearray(flow._packet(0, ACK, b"spoofed", 1))
    spoof[12:16] = ipaddress.IPv4Address("10.64.0.99").packed  # not the peer's virtual IP
    spoofed = mn.tunnel.seal(core.CAPSULE, bytes(spoof))

    batch = [
        bytes(forged_counter),  # forged before the genuine one: must not move the window
        good[0],
        bytes(forged_tag),
        good[1],
        good[0],  # replayed
        good[2][:20],  # truncated below the capsule overhead
        bytes(forged_body),
        good[2],
        good[3][:-1],  # truncated: the tag no longer checks
        foreign_key[:1] + own_index + foreign_key[5:],  # sealed under another tunnel's key
        foreign_key,  # an index cn does not know
        bytes(wrong_index),
        good[3],
        ugood[0],
        spoofed,
        good[4],
        good[5],
        good[1],  # replayed
        *good[6:],
        *ugood[1:],
        b"",  # empty: the socket reader skips it
    ]
    socket_batch(cn, batch, MN_ADDR, time.time())
    assert dict(cn.module.drops.counts) == {
        "unauthenticated capsule": 5,  # forged counter, tag, body; cut tag; foreign key
        "replayed capsule": 2,
        "truncated capsule": 1,
        "capsule for unknown tunnel": 2,
        "inner source is not the peer's virtual IP": 1,
    }
    for m in metas:
        flow.fate(m, True)
    for m in umetas:
        udp.fate(m, True)
    check = Checker([flow, udp], vnet)
    written = read_tun(cn)
    for frame in written:
        check(frame)
    flow.verify()
    udp.verify()
    if vnet:
        # the bad ones in between did not split the run of good segments
        tcp_frames = [f for f in written if f[VNET.size + 9] == TCP]
        assert len(tcp_frames) == 1
    assert cn.tunnel.rx_packets == len(good) + len(ugood) + 1  # + the spoofed one, which opened
    assert cn.tunnel.endpoint == MN_ADDR


@PATHS
def test_forged_and_replayed_datagrams_from_elsewhere_do_not_move_the_endpoint(pair):
    mn, cn = pair
    good = mn.tunnel.seal(core.CAPSULE, bytes(1))
    forged = bytearray(good)
    forged[-3] ^= 4
    socket_batch(cn, [bytes(forged)], ("203.0.113.66", 9), time.time())
    assert cn.module.drops.counts["unauthenticated capsule"] == 1
    socket_batch(cn, [good], MN_ADDR, time.time())
    socket_batch(cn, [good], ("203.0.113.66", 9), time.time())
    assert cn.module.drops.counts["replayed capsule"] == 1
    assert cn.tunnel.endpoint == MN_ADDR and cn.tunnel.rx_packets == 1


# --- fuzz: both paths, both directions ---------------------------------------------------------


@st.composite
def mangled(draw, datagrams: list[bytes]) -> bytes:
    d = bytearray(draw(st.sampled_from(datagrams)))
    for _ in range(draw(st.integers(0, 4))):
        d[draw(st.integers(0, len(d) - 1))] ^= 1 << draw(st.integers(0, 7))
    if draw(st.booleans()):
        d = d[: draw(st.integers(0, len(d)))]
    return bytes(d)



def sample_frames(vnet: bool) -> list[bytes]:
    rng = random.Random(5)
    out = []
    for flow in flows_from(rng, MN, CN, 40000):
        for _ in range(3):
            out += flow.write(plain=not vnet)[0]
    return out


SAMPLES = {True: sample_frames(True), False: sample_frames(False)}


@PATHS
@FUZZ
@given(data=st.data())
def test_receive_never_raises_and_counts_what_it_drops(pair, data):
    """Random and mangled datagrams (outer fuzz), and authenticated capsules
    carrying mangled inner packets (a hostile or broken peer)."""
    mn, cn = pair
    vnet = mn.module.vnet
    frames = data.draw(st.lists(st.sampled_from(SAMPLES[vnet]), min_size=1, max_size=3))
    packets = [p for f in frames for p in (offload.segment(f) if vnet else [f])]
    good = [mn.tunnel.seal(core.CAPSULE, p) for p in packets]
    inner = [offload.finish_checksum(p) for p in packets]
    batch = data.draw(
        st.lists(
            st.one_of(
                st.binary(max_size=80),
                mangled(good),
                st.sampled_from(good),
                mangled(inner).map(lambda p: ("inner", p)),
            ),
            max_size=30,
        )
    )
    datagrams = [mn.tunnel.seal(core.CAPSULE, item[1]) if isinstance(item, tuple) else item for item in batch]
    before = cn.tunnel.rx_packets
    drops_before = collections.Counter(cn.module.drops.counts)
    socket_batch(cn, datagrams, MN_ADDR, time.time())
    read_tun(cn)
    drops = collections.Counter(cn.module.drops.counts) - drops_before
    opened = cn.tunnel.rx_packets - before
    considered = sum(1 for d in datagrams if d and d[0] in DATA_TYPES)
    # each datagram handed to the module is opened or counted, never both,
    # never neither; an opened one may then be dropped for its inner source
    inner_drops = drops.pop("inner source is not the peer's virtual IP", 0)
    assert opened + sum(drops.values()) == considered
    assert inner_drops <= opened
    assert set(drops) <= {"truncated capsule", "capsule for unknown tunnel", "unauthenticated capsule", "replayed capsule"}


@st.composite
def mangled_frames(draw, vnet: bool) -> bytes:
    f = bytearray(draw(st.sampled_from(SAMPLES[vnet])))
    for _ in range(draw(st.integers(1, 5))):
        position = draw(st.integers(0, min(len(f) - 1, 100)))
        f[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        f = f[: draw(st.integers(0, len(f)))]
    return bytes(f)


@PATHS
@FUZZ
@given(data=st.data())
def test_sending_bad_tun_frames_never_raises(pair, data):
    mn, _cn = pair
    vnet = mn.module.vnet
    frames = data.draw(st.lists(st.one_of(st.binary(min_size=1, max_size=200), mangled_frames(vnet)), max_size=6))
    pump(mn, frames)  # tun_reader must survive every one of them
    assert set(mn.module.drops.counts) <= {
        "unusable TUN frame", "no tunnel for destination", "send failed", "socket send buffer full",
    }


@pytest.mark.parametrize("pair", ["offload"], indirect=True)
def test_unusable_tun_frames_are_counted_and_the_next_ones_sent(pair):
    mn, _cn = pair
    rng = random.Random(3)
    flow = TcpFlow(rng, True, MN, CN, 40001, 5201)
    while True:
        frames, metas = flow.write(plain=False)
        if len(metas) > 10:
            break
    packet = frames[0][VNET.size :]
    bad = [
        VNET.pack(NEEDS_CSUM, GSO_TCPV6, 72, 0, 40, 16) + packet,  # gso_size 0
        VNET.pack(NEEDS_CSUM, GSO_TCPV6, 72, 1, 40, 16) + packet,  # tens of thousands of segments
        frames[0][:25],
        VNET.pack(NEEDS_CSUM, 3, 72, 1000, 40, 16) + packet,  # UFO
    ]
    sent = pump(mn, bad + frames)
    assert mn.module.drops.counts["unusable TUN frame"] == len(bad)
    assert len(sent) == len(metas)


@pytest.mark.parametrize("pair", ["offload"], indirect=True)
def test_peer_sending_tcp_data_offset_4_does_not_kill_the_receive_loop(pair):
    """An authenticated peer's two in-sequence TCP segments with a 16-byte
    header used to crash Coalescer._emit out of flush (before db4d827)."""
    mn, cn = pair
    src, dst = MN.vip4.packed, CN.vip4.packed

    def short_header(seq: int) -> bytes:
        th = struct.pack("!HHIIBBH", 40000, 5201, seq, 1, 4 << 4, ACK, 100)  # 16 bytes: no checksum field
        return bytes(ipv4_header(src, dst, TCP, 20 + 16 + 200, 1)) + th + bytes(200)

    batch = [mn.tunnel.seal(core.CAPSULE, short_header(0)), mn.tunnel.seal(core.CAPSULE, short_header(200))]
    batch.append(mn.tunnel.seal(core.CAPSULE, bytes(ipv4_header(src, dst, UDP, 28, 2)) + struct.pack("!HHHH", 1, 2, 8, 0)))
    socket_batch(cn, batch, MN_ADDR, time.time())
    assert len(read_tun(cn)) == 3


@pytest.mark.parametrize("doff", [0, 2, 4])
@pytest.mark.parametrize("pair", ["offload"], indirect=True)
def test_tun_frame_with_tcp_data_offset_below_5_is_counted_not_fatal(pair, doff):
    mn, _cn = pair
    flow = TcpFlow(random.Random(4), False, MN, CN, 40001, 5201)
    while True:
        frames, metas = flow.write(plain=False)
        if len(metas) > 2:
            break
    bad = bytearray(frames[0])
    bad[VNET.size + 20 + 12] = doff << 4
    try:
        sent = pump(mn, [bytes(bad)] + frames)
    except BaseExceptionGroup as group:
        crash = group.subgroup((struct.error, IndexError))
        if crash is None:
            raise
        pytest.fail(f"tun_reader died: {crash.exceptions[0]!r}")
    assert mn.module.drops.counts["unusable TUN frame"] == 1
    assert len(sent) == len(metas)


# --- the real UDP GSO / GRO edge (loopback) ---------------------------------------------------


async def test_udp_gso_send_and_gro_receive_keep_every_datagram(nursery):
    """The sender's tun_reader sends with UDP_SEGMENT over loopback, the
    receiver reads with UDP_GRO (receive_batch) as socket_reader does:
    every segment arrives whole, in far fewer system calls."""
    now = time.time()
    mn_tunnel, cn_tunnel = handshake(now)
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (a, b):
        s.setblocking(False)
        force_buffers(s)
        s.bind(("127.0.0.1", 0))
    gro = batch_io.enable_gro(b)
    mn_tunnel.endpoint = b.getsockname()
    cn_tunnel.endpoint = a.getsockname()
    mn = Node(MN, a.getsockname(), mn_tunnel, True, udp=a)
    cn = Node(CN, b.getsockname(), cn_tunnel, True, udp=b)
    try:
        nursery.start_soon(mn.module.tun_reader)
        rng = random.Random(11)
        flows = flows_from(rng, MN, CN, 40000)
        check = Checker(flows, True)
        buffer = bytearray(65535)
        sent = reads = 0
        while sent < 20_000:
            flow = rng.choice(flows)
            frames, metas = flow.write(plain=False)
            await feed(mn, frames)
            for m in metas:
                flow.fate(m, True)
            sent += len(metas)
            while (got := batch_io.receive_batch(b, buffer)) is not None:
                datagrams, source = got
                reads += 1
                socket_batch(cn, datagrams, source[:2], now)
                for frame in read_tun(cn):
                    check(frame)
        for flow in flows:
            flow.verify()
        assert dict(cn.module.drops.counts) == {} and dict(mn.module.drops.counts) == {}
        assert cn_tunnel.rx_packets == sent
        if gro and mn.module.gso:
            assert reads < sent / 4  # many datagrams per system call
    finally:
        nursery.cancel_scope.cancel()
        for node in (mn, cn):
            node.close()
        a.close()
        b.close()
