"""Packet Handling Module (seed): encapsulates virtual-IP packets from the
TUN into Capsule Messages and back.

The reader drains the TUN until EAGAIN on each wake-up and seals and sends
in place: no channel hop per packet. Tunnels are found by destination
virtual IP (outbound) and by receiver index (inbound).
"""

from __future__ import annotations

import logging
import os
import socket
import time

import trio

from cyphonic.core import tunnel as core
from cyphonic.drops import Drops
from cyphonic.errors import AuthenticationError
from cyphonic.wire.tunnel import CAPSULE_HEADER, CAPSULE_HEADER_STRUCT, OVERHEAD

log = logging.getLogger("cyphonic.packet")

Address = tuple[str, int]


class PacketHandlingModule:
    def __init__(self, tun_fd: int, sockets: dict[int, socket.socket]) -> None:
        self.tun_fd = tun_fd
        self.sockets = sockets
        self.by_index: dict[int, core.Tunnel] = {}
        self.by_vip: dict[bytes, core.Tunnel] = {}
        self.drops = Drops(log)

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

    def send(self, tunnel: core.Tunnel, type_: int, plaintext: bytes) -> None:
        datagram = tunnel.seal(type_, plaintext)
        sock = self.sockets[socket.AF_INET6 if ":" in tunnel.endpoint[0] else socket.AF_INET]
        try:
            sock.sendto(datagram, tunnel.endpoint)
        except BlockingIOError:
            self.drops("socket send buffer full")
            return
        except OSError as exc:
            self.drops("send failed", tunnel.endpoint, str(exc))
            return
        tunnel.tx_bytes += len(plaintext)
        tunnel.tx_packets += 1
        tunnel.last_sent = time.time()

    async def tun_reader(self) -> None:
        """TUN -> tunnel: drain the device on every wake-up."""
        fd = self.tun_fd
        by_vip = self.by_vip
        while True:
            await trio.lowlevel.wait_readable(fd)
            while True:
                try:
                    packet = os.read(fd, 65535)
                except BlockingIOError:
                    break
                version = packet[0] >> 4 if packet else 0
                if version == 4:
                    tunnel = by_vip.get(packet[16:20])
                elif version == 6:
                    tunnel = by_vip.get(packet[24:40])
                else:
                    continue
                if tunnel is None:
                    self.drops("no tunnel for destination")
                    continue
                self.send(tunnel, core.CAPSULE, packet)

    # -- receiving ------------------------------------------------------------

    def receive(self, data: bytes, source: Address, now: float) -> None:
        """A Capsule Message / Keep Alive / Keep Alive Ack / Tunnel Update."""
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
        try:
            os.write(self.tun_fd, packet)
        except OSError as exc:
            self.drops("TUN write failed", source, str(exc))
            return
        tunnel.rx_bytes += len(packet)


__all__ = ["PacketHandlingModule", "CAPSULE_HEADER"]
