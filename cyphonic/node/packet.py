"""Packet Handling Module (seed): encapsulates virtual-IP packets from the
TUN into Capsule Messages and back.

Two data paths share this module (DESIGN section 10):
- offload: the TUN hands over GSO super-packets behind a virtio header; each
  is cut into segments that are sealed one by one and sent with UDP GSO;
  received GRO batches are opened and in-order TCP segments coalesced into
  one TUN write, flushed at the end of every batch.
- plain: one packet per read, per send and per write (any kernel).
The reader drains the TUN until EAGAIN on each wake-up and seals and sends
in place: no channel hop per packet.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time

import trio

from cyphonic.core import offload
from cyphonic.core import tunnel as core
from cyphonic.drops import Drops
from cyphonic.errors import AuthenticationError, ParseError
from cyphonic.kernel.batch import send_segments
from cyphonic.wire.tunnel import CAPSULE_HEADER_STRUCT, OVERHEAD

log = logging.getLogger("cyphonic.packet")

Address = tuple[str, int]
TUN_READ = 65535 + offload.VNET_HDR_LEN
# Test-only: drop this fraction of received outer datagrams (the kernel has
# no netem); read once, so the hot path pays one float comparison.
TEST_LOSS = float(os.environ.get("CYPHONIC_TEST_LOSS", "0") or 0)


class PacketHandlingModule:
    def __init__(self, tun_fd: int, sockets: dict[int, socket.socket], *, vnet: bool = False, gso: bool = False) -> None:
        self.tun_fd = tun_fd
        self.sockets = sockets
        self.vnet = vnet
        self.gso = gso
        self.by_index: dict[int, core.Tunnel] = {}
        self.by_vip: dict[bytes, core.Tunnel] = {}
        self.drops = Drops(log)
        self.coalescer = offload.Coalescer(self._write_frame)
        self.loss = TEST_LOSS
        if self.loss:
            log.warning("test loss hook active: dropping %.2f%% of received datagrams", self.loss * 100)

    # -- tunnel table ---------------------------------------------------------

    def install(self, tunnel: core.Tunnel) -> core.Tunnel | None:
        """Add `tunnel`; returns the tunnel it replaces for the same peer."""
        old = self.by_vip.get(tunnel.peer.vip4.packed)
        if old is not None:
            self.remove(old)
        self.by_index[tunnel.local_index] = tunnel
        self.by_vip[tunnel.peer.vip4.packed] = tunnel
        self.by_vip[tunnel.peer.vip6.packed] = tunnel
        return old

    def remove(self, tunnel: core.Tunnel) -> None:
        self.by_index.pop(tunnel.local_index, None)
        for vip in (tunnel.peer.vip4.packed, tunnel.peer.vip6.packed):
            if self.by_vip.get(vip) is tunnel:
                del self.by_vip[vip]

    def tunnel_to(self, fqdn: str) -> core.Tunnel | None:
        for t in self.by_index.values():
            if t.peer.fqdn == fqdn:
                return t
        return None

    # -- sending --------------------------------------------------------------

    def _socket_for(self, tunnel: core.Tunnel) -> socket.socket:
        return self.sockets[socket.AF_INET6 if ":" in tunnel.endpoint[0] else socket.AF_INET]

    def send(self, tunnel: core.Tunnel, type_: int, plaintext: bytes) -> None:
        self.send_many(tunnel, [tunnel.seal(type_, plaintext)], len(plaintext))

    def send_many(self, tunnel: core.Tunnel, datagrams: list[bytes], inner_bytes: int) -> None:
        try:
            sent = send_segments(self._socket_for(tunnel), datagrams, tunnel.endpoint, self.gso)
        except OSError as exc:
            self.drops("send failed", tunnel.endpoint, str(exc))
            return
        if sent < len(datagrams):
            self.drops("socket send buffer full")
        tunnel.tx_bytes += inner_bytes
        tunnel.tx_packets += sent
        tunnel.last_sent = time.time()

    def _route(self, packet: bytes) -> core.Tunnel | None:
        version = packet[0] >> 4 if packet else 0
        if version == 4:
            return self.by_vip.get(packet[16:20])
        if version == 6:
            return self.by_vip.get(packet[24:40])
        return None

    async def tun_reader(self) -> None:
        """TUN -> tunnel: drain the device on every wake-up."""
        fd = self.tun_fd
        while True:
            await trio.lowlevel.wait_readable(fd)
            while True:
                try:
                    frame = os.read(fd, TUN_READ)
                except BlockingIOError:
                    break
                if self.vnet:
                    self._send_frame(frame)
                else:
                    tunnel = self._route(frame)
                    if tunnel is None:
                        self.drops("no tunnel for destination")
                        continue
                    self.send(tunnel, core.CAPSULE, frame)

    def _send_frame(self, frame: bytes) -> None:
        """One super-packet: cut, seal each segment, send runs with UDP GSO."""
        try:
            packets = offload.segment(frame)
        except ParseError as exc:
            self.drops("unusable TUN frame", None, str(exc))
            return
        current, pending, inner = None, [], 0
        for packet in packets:
            tunnel = self._route(packet)
            if tunnel is None:
                self.drops("no tunnel for destination")
                continue
            if tunnel is not current:
                if pending:
                    self.send_many(current, pending, inner)
                current, pending, inner = tunnel, [], 0
            pending.append(tunnel.seal(core.CAPSULE, packet))
            inner += len(packet)
        if pending:
            self.send_many(current, pending, inner)

    # -- receiving ------------------------------------------------------------

    def receive(self, data: bytes, source: Address, now: float) -> None:
        """A Capsule Message / Keep Alive / Keep Alive Ack / Tunnel Update."""
        if self.loss and random.random() < self.loss:
            self.drops("test loss hook")
            return
        if len(data) < OVERHEAD:
            self.drops("truncated capsule", source)
            return
        type_, index, _counter = CAPSULE_HEADER_STRUCT.unpack_from(data)
        tunnel = self.by_index.get(index)
        if tunnel is None:
            self.drops("capsule for unknown tunnel", source)
            return
        try:
            plaintext = tunnel.open(data, source, now)
        except AuthenticationError as exc:
            self.drops("unauthenticated capsule", source, exc.reason)
            return
        if plaintext is None:
            self.drops("replayed capsule", source)
            return
        tunnel.rx_packets += 1
        if type_ == core.CAPSULE:
            self._deliver(tunnel, plaintext, source)
        elif type_ == core.KEEPALIVE:
            self.send(tunnel, core.KEEPALIVE_ACK, b"")
        # Keep Alive Ack and Tunnel Update: opening them (above) already
        # refreshed liveness and, if newest, moved the endpoint.

    def _deliver(self, tunnel: core.Tunnel, packet: bytes, source: Address) -> None:
        version = packet[0] >> 4 if packet else 0
        # A peer may only speak from its own virtual IP: no spoofing others.
        if version == 4 and len(packet) >= 20 and packet[12:16] == tunnel.peer.vip4.packed:
            pass
        elif version == 6 and len(packet) >= 40 and packet[8:24] == tunnel.peer.vip6.packed:
            pass
        else:
            self.drops("inner source is not the peer's virtual IP", source)
            return
        tunnel.rx_bytes += len(packet)
        if self.vnet:
            self.coalescer.add(packet, tunnel)
            return
        try:
            os.write(self.tun_fd, offload.finish_checksum(packet))
        except OSError as exc:
            self.drops("TUN write failed", source, str(exc))

    def flush(self) -> None:
        """End of a receive batch: write what the coalescer holds."""
        if self.vnet:
            self.coalescer.flush()

    def _write_frame(self, frame: bytes) -> None:
        try:
            os.write(self.tun_fd, frame)
        except OSError as exc:
            self.drops("TUN write failed", None, str(exc))
