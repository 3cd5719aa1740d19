"""The node daemon: one nursery owns the socket readers, the TUN reader,
the resolver, the refresh loop, the control socket and every peer's
supervisor task."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator

import trio

from cyphonic import control, crypto, fastpath, metrics, notify
from cyphonic.config import format_address
from cyphonic.crypto import PacketBuffer
from cyphonic.errors import AuthenticationError, ParseError
from cyphonic.kernel import batch as batch_io
from cyphonic.kernel.netlink import global_addresses, network_changes
from cyphonic.kernel.tun import Tun
from cyphonic.keys import read_certificate
from cyphonic.node import data_thread
from cyphonic.node.compiled_loops import CompiledLoops
from cyphonic.node.demux import Demultiplexer
from cyphonic.node.packet import PacketHandlingModule
from cyphonic.node.resolver import ResolverModule
from cyphonic.node.signaling import SignalingModule
from cyphonic.udp import size_buffers
from cyphonic.wire.certificate import Certificate
from cyphonic.wire.common import MAX_DATAGRAM, parse

log = logging.getLogger("cyphonic.node")


def open_sockets(port: int) -> dict[int, socket.socket]:
    """One UDP socket per address family, for signaling and tunnels alike,
    so the NAT mapping the NMS sees is the one peers can use."""
    sockets: dict[int, socket.socket] = {}
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        size_buffers(sock)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            if family == socket.AF_INET:
                raise
            log.info("no IPv6 socket: %s", exc)
            continue
        sock.setblocking(False)
        sockets[family] = sock
    return sockets


async def read_sockets(sock: socket.socket, packet: PacketHandlingModule, demux: Demultiplexer, drops) -> None:
    """Drain the socket on every wake-up (GRO: many datagrams per call);
    data is handled in place, signaling goes to the demultiplexer."""
    buf = PacketBuffer(MAX_DATAGRAM)
    view = buf.view
    async for n, size, source, now in batch_io.gro_batches(sock, buf.data):

        def signaling(start: int, end: int, source=source, now=now) -> None:
            to_signaling(demux, drops, bytes(view[start:end]), source, now)

        packet.receive_batch(buf, n, size, source, now, signaling)
        # the next read reuses the buffer: write what it still holds
        packet.flush()


def to_signaling(demux: Demultiplexer, drops, data: bytes, source: tuple[str, int], now: float) -> None:
    """A signaling datagram to the identity it is for."""
    try:
        demux.receive(data, source, now)
    except (ParseError, AuthenticationError) as exc:
        # the modules count their own; this boundary keeps the reader alive
        drops(f"{type(exc).__name__} at the listener", source, str(exc).splitlines()[0])


def network_changed(packet: PacketHandlingModule, identities: list[SignalingModule]) -> None:
    """Mobility: each identity registers its new locators at once and its
    tunnels follow (core.signaling.mobility). The first authenticated
    datagram after it is noted: the first packet on the new path."""
    heard = packet.heard_after_move
    moved = False
    for signaling in identities:
        if signaling.network_changed():
            moved = True
            for move in list(signaling.machine.moves)[:-1]:
                move.setdefault("first_received", heard)
    if moved:
        packet.heard_after_move = None


def offered_ciphers(choice: str) -> list[str]:
    """The suites a tunnel handshake offers for the `cipher` key, by name."""
    offered = crypto.suites_offered(choice)
    return [name for name, bit in crypto.SUITE_BITS.items() if offered & bit]


def mobility_status(signaling: SignalingModule, packet: PacketHandlingModule) -> dict:
    """The moves this identity saw, each with when the first authenticated
    datagram came after it (the first packet on the new path)."""
    status = signaling.mobility()
    moves = status["moves"]
    if moves and "first_received" not in moves[-1]:
        moves[-1]["first_received"] = packet.heard_after_move
    for move in moves:
        first = move.get("first_received")
        move["first_received_ms"] = round((first - move["at"]) * 1000, 1) if first is not None else None
    return status


class NodeDaemon:
    """`tun_factory`, `local_addresses` and `control_name` are the seams the
    integration tests use (an in-memory TUN, loopback locators, no control
    socket); the defaults are the real kernel."""

    def __init__(
        self,
        cfg: dict,
        *,
        tun_factory: Callable[..., Tun] = Tun,
        local_addresses: Callable[[set[str]], list[str]] = global_addresses,
        control_name: str | None = "",
    ) -> None:
        self.cfg = cfg
        self.tun_factory = tun_factory
        self.control_name = cfg["control"] if control_name == "" else control_name
        self.started = time.time()
        identity = crypto.Identity.load(cfg["key"])
        certificate = read_certificate(cfg["certificate"])
        ca_public = crypto.ca_public_key(read_certificate(cfg["ca"]))
        # The AS decides whether the certificate is good (this host's clock
        # may be wrong); locally we only warn.
        cert = parse(Certificate, certificate).body.value
        try:
            crypto.verify_certificate(certificate, ca_public, time.time())
        except AuthenticationError as exc:
            log.warning("own certificate looks invalid here (%s); asking the AS anyway", exc.reason)
        self.domain = cert.fqdn.split(".", 1)[1]
        self.sockets = open_sockets(cfg["listen_port"])
        offload = cfg["offload"]
        self.gso = offload and all(batch_io.gso_supported(s) for s in self.sockets.values())
        self.gro = offload and all(batch_io.enable_gro(s) for s in self.sockets.values())
        self.threaded = False  # the data path on its own thread (node.data_thread)
        self.metrics_address: tuple[str, int] | None = None  # where GET /metrics answers, once bound
        self.tun: Tun | None = None
        self.packet = PacketHandlingModule(-1, self.sockets, gso=self.gso)
        self.signaling = SignalingModule(
            cfg, identity, certificate, ca_public, self.sockets, self.packet, local_addresses=local_addresses
        )
        self.demux = Demultiplexer()
        self.demux.add(self.signaling)
        self.packet.on_tunnel_message = self.signaling.tunnel_message
        r = cfg["resolver"]
        self.resolver = ResolverModule(self.domain, self.signaling, r["listen"], r["upstream"], r["ttl"])

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.signaling.nursery = nursery
            nursery.start_soon(self.signaling.run)
            if self.control_name:
                await nursery.start(control.serve, self.control_name, self.status, self.cfg["control_group"])
            if self.cfg["metrics"]:
                self.metrics_address = await nursery.start(metrics.serve, self.cfg["metrics"], self._metrics)
            # the sockets' Trio readers, until a data thread takes over
            readers = trio.CancelScope()
            nursery.start_soon(self._read_sockets, readers)
            grant = await self.signaling.login()
            self.tun = self.tun_factory(self.cfg["tun"], offload=self.cfg["offload"])
            self.tun.configure(self.cfg["mtu"], grant.vip4, grant.vip4_prefix, grant.vip6, grant.vip6_prefix)
            self.packet.tun_fd = self.tun.fd
            self.packet.vnet = getattr(self.tun, "vnet", False)
            if self.packet.vnet and fastpath.chosen(self.cfg["packet_loops"]):
                self.packet.compiled = CompiledLoops(self.packet, coalesce=True)
            self.threaded = self.cfg["data_thread"] and self.packet.compiled is not None
            log.info("data path: %s", self.dataplane())
            if self.threaded:
                readers.cancel()
                nursery.start_soon(data_thread.run, self.packet, list(self.sockets.values()), self._signaling)
            else:
                nursery.start_soon(self.packet.tun_reader)
            await self.signaling.register_all()
            nursery.start_soon(network_changes, self.network_changed)
            await nursery.start(self.resolver.run)
            log.info("node %s ready on %s", grant.fqdn, self.tun.name)
            # logged in, registered, TUN up, resolver bound: systemd's `Type=notify`
            notify.ready(f"node {grant.fqdn} ready on {self.tun.name}")
            task_status.started(self)

    async def _read_sockets(self, scope: trio.CancelScope) -> None:
        with scope:
            async with trio.open_nursery() as nursery:
                for sock in self.sockets.values():
                    nursery.start_soon(read_sockets, sock, self.packet, self.demux, self.signaling.drops)

    def _signaling(self, data: bytes, source: tuple[str, int], now: float) -> None:
        """A signaling datagram the data thread handed over, on the Trio thread."""
        to_signaling(self.demux, self.signaling.drops, data, source, now)

    def network_changed(self) -> None:
        network_changed(self.packet, [self.signaling])

    def _metrics(self) -> Iterator[metrics.Metric]:
        return metrics.node_families(self)

    def dataplane(self) -> dict:
        return {
            "path": "offload" if self.packet.vnet else "plain",
            "packet_loops": "compiled" if self.packet.compiled else "python",
            "data_thread": self.threaded,
            "tun_offloads": getattr(self.tun, "offload_names", []),
            "udp_gso": self.gso,
            "udp_gro": self.gro,
            "ciphers": offered_ciphers(self.cfg["cipher"]),
        }

    def status(self, _request: dict) -> dict:
        g = self.signaling.grant
        now = time.time()
        peers = [
            {
                "fqdn": t.peer.fqdn,
                "vip4": str(t.peer.vip4),
                "vip6": str(t.peer.vip6),
                "path": t.path_name,
                "process": t.path.process,
                "endpoint": format_address(t.endpoint),
                "tx_bytes": t.tx_bytes,
                "rx_bytes": t.rx_bytes,
                "tx_packets": t.tx_packets,
                "rx_packets": t.rx_packets,
                "last_handshake": round(now - t.established, 1),
                "rekeys": t.rekeys,
                "cipher": t.cipher.suite,
            }
            for t in self.packet.by_index.values()
        ]
        drops: dict[str, int] = {}
        for d in (self.packet.drops, self.signaling.drops, self.resolver.drops):
            drops.update(d.counts)
        return {
            "role": "node",
            "fqdn": g.fqdn if g else None,
            "vip4": str(g.vip4) if g else None,
            "vip6": str(g.vip6) if g else None,
            "registered": bool(self.signaling.registered),
            "nat": any(r["nat"] for r in self.signaling.registered.values()) if self.signaling.registered else None,
            "registrations": self.signaling.registered,
            "tun": self.tun.name if self.tun else None,
            "listen_port": self.cfg["listen_port"],
            "uptime": round(now - self.started, 1),
            "dataplane": self.dataplane(),
            "peers": sorted(peers, key=lambda p: p["fqdn"]),
            "mobility": mobility_status(self.signaling, self.packet),
            "drops": drops,
            "timers": {
                "route_selection_ms": [round(x, 3) for x in self.signaling.route_ms],
                "tunnel_establishment_ms": [round(x, 3) for x in self.signaling.tunnel_ms],
            },
        }
