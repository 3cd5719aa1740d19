"""Two PacketHandlingModules ("mn" and "cn") with only the OS edges replaced.

They share a real pair of Tunnels made by the handshake (core.handshake's Initiator /
respond). Each TUN is one end of an AF_UNIX datagram socketpair (the
module's own `tun_reader` reads it, its `os.write`s land on the other end),
and each UDP socket is a stand-in (`FakeUdp`) that cuts UDP_SEGMENT sends
the way the kernel does. A `Link` hands the datagrams to the receiver,
losing, reordering and duplicating some, in batches of `receive()` +
`flush()` (what `read_sockets` does per GRO batch), and a `Checker`
verifies every frame the receiver writes to its TUN.

The `pair` fixture (tests/integration/conftest.py) builds one `node_pair`;
`PATHS` runs a test on the offload path and on the plain one.
"""

from __future__ import annotations

import collections
import errno
import ipaddress
import random
import socket
import struct
import time

import pytest
import trio
import trio.testing

from cyphonic import crypto, fastpath
from cyphonic.core import tunnel as core
from cyphonic.core.handshake import DEFAULT_SUITES, Initiator, respond
from cyphonic.core.replay import WINDOW
from cyphonic.kernel import batch as batch_io
from cyphonic.node.compiled_loops import CompiledLoops
from cyphonic.node.packet import PacketHandlingModule
from cyphonic.wire.tunnel import CAPSULE_HEADER_STRUCT
from tests.support.checksum import ipv4_header_ok, l4_checksum_ok, pseudo_header, rfc1071_sum
from tests.support.packets import NEEDS_CSUM, TCP, VNET, kernel_finish
from tests.support.traffic import Meta

SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33
MAX_OUTER = 1472  # one 1500-byte underlay datagram

MN = core.PeerInfo("mn.cyphonic.test", ipaddress.IPv4Address("10.64.0.2"), ipaddress.IPv6Address("fd00:64::2"))
CN = core.PeerInfo("cn.cyphonic.test", ipaddress.IPv4Address("10.64.0.3"), ipaddress.IPv6Address("fd00:64::3"))
MN_ADDR, CN_ADDR = ("192.0.2.10", 4500), ("198.51.100.20", 4500)

# name -> (offload, compiled loops, cipher suites): the offload path with its
# compiled loops (cyphonic.fastpath) under each cipher, with the pure-Python
# loops they must match, and the plain one-packet-per-call path
CHACHA = crypto.SUITE_BITS[crypto.CHACHA20_POLY1305]
SETUPS = {
    "compiled": (True, True, DEFAULT_SUITES),  # AES-256-GCM where the CPU has AES-NI
    "compiled-chacha": (True, True, CHACHA),
    "offload": (True, False, CHACHA),
    "plain": (False, False, DEFAULT_SUITES),
}
PATHS = pytest.mark.parametrize("pair", list(SETUPS), indirect=True)


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
    def __init__(
        self, me: core.PeerInfo, address, tunnel: core.Tunnel, vnet: bool, udp=None, compiled: bool = False
    ) -> None:
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
        if compiled:
            assert fastpath.available(), f"the compiled loops are not built: {fastpath.MISSING}"
            self.module.compiled = CompiledLoops(self.module, coalesce=True)
        self.module.install(tunnel)

    def close(self) -> None:
        self.kernel.close()
        self.app.close()


def handshake(now: float, suites: int = DEFAULT_SUITES) -> tuple[core.Tunnel, core.Tunnel]:
    """A real tunnel: Tunnel Request / Response, ephemeral X25519, End Keys."""
    key = crypto.random_key()
    mn_path = core.Path(0xA001, "TunnelRequestToCN", True, CN, CN_ADDR, key)
    cn_path = core.Path(0xA001, "TunnelRequestToCN", False, MN, MN_ADDR, key)
    initiator = Initiator(mn_path, MN, now, suites)
    cn_tunnel, response = respond(cn_path, CN, initiator.request, MN_ADDR, now, suites)
    mn_tunnel = initiator.accept_response(response, CN_ADDR, now)
    return mn_tunnel, cn_tunnel


def node_pair(path: str) -> tuple[Node, Node]:
    """mn and cn, the tunnel between them up, on one data path of SETUPS."""
    vnet, compiled, suites = SETUPS[path]
    mn_tunnel, cn_tunnel = handshake(time.time(), suites)
    return Node(MN, MN_ADDR, mn_tunnel, vnet, compiled=compiled), Node(CN, CN_ADDR, cn_tunnel, vnet, compiled=compiled)


def read_tun(node: Node) -> list[bytes]:
    """What the module wrote to its TUN since the last call."""
    out = []
    while True:
        try:
            out.append(node.app.recv(70000))
        except BlockingIOError:
            return out


def socket_batch(node: Node, datagrams: list[bytes], source, now: float) -> list[bytes]:
    """`datagrams` as GRO reads hand them to node.daemon.read_sockets: runs
    of equal size (the last may be shorter, at most 64) laid end to end in
    one buffer, each its own (the Python coalescer may hold views of them
    until the flush at the end). Returns what went to the signaling side."""
    signaling: list[bytes] = []
    datagrams = [d for d in datagrams if d]  # GRO never returns an empty read
    i = 0
    while i < len(datagrams):
        size, j = len(datagrams[i]), i + 1
        while j < len(datagrams) and j - i < 64 and len(datagrams[j]) <= size:
            j += 1
            if len(datagrams[j - 1]) < size:
                break
        buf = crypto.PacketBuffer(data=bytearray(b"".join(datagrams[i:j])))
        node.module.receive_batch(
            buf,
            len(buf.data),
            size,
            source,
            now,
            lambda start, end, buf=buf: signaling.append(bytes(buf.data[start:end])),
        )
        i = j
    node.module.flush()
    return signaling


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
            assert ipv4_header_ok(packet), "IPv4 header checksum"
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
            assert field % 0xFFFF == rfc1071_sum(pseudo_header(packet, len(packet) - l3, proto)) % 0xFFFF
            if self.frames % 61 == 0:  # and now and then the whole thing, as the kernel does it
                assert l4_checksum_ok(kernel_finish(frame))
                self.deep += 1
        else:
            assert l4_checksum_ok(packet), "L4 checksum"
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
        for d, m in zip(datagrams, metas, strict=True):
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
