"""Packet Handling Module of the adapter (seed): the node's module, with
the LAN port in place of the TUN and one tunnel per (general node, peer).

The LAN socket gives the same virtio-net header as a TUN read, so a frame
from a general node goes through the node's own offload path: GSO
super-packets are cut into segments, sealed in place and sent with UDP
GSO. On receive, in-order TCP segments are coalesced into one GSO frame
to the general node's MAC, with the checksum left to the kernel.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

from cyphonic.core import offload
from cyphonic.core import tunnel as core
from cyphonic.kernel.packet_socket import ETH_HLEN, ETH_P_IP, ETH_P_IPV6, PacketSocket
from cyphonic.node.packet import PacketHandlingModule
from cyphonic.wire.virtio import F_NEEDS_CSUM, PLAIN_HEADER, VNET_HDR, VNET_HDR_LEN

log = logging.getLogger("cyphonic.packet")

ETHERTYPE = {4: ETH_P_IP.to_bytes(2, "big"), 6: ETH_P_IPV6.to_bytes(2, "big")}


class LanPacketHandling(PacketHandlingModule):
    def __init__(self, sockets: dict[int, socket.socket], lan: PacketSocket, *, offload: bool, gso: bool) -> None:
        super().__init__(-1, sockets, vnet=offload and lan.vnet, gso=gso)
        self.lan = lan
        self.mac = lan.mac
        # a general node's virtual IP (4 or 16 bytes) -> the general node,
        # while it holds a lease for it: where a packet from a peer goes
        self.local: dict[bytes, Any] = {}
        self.lan_tx_frames = 0

    # -- the tunnel table: one tunnel per (general node, peer) ----------------

    def route_keys(self, tunnel: core.Tunnel) -> tuple[bytes, bytes]:
        owner = tunnel.owner
        return owner.vip4_bytes + tunnel.peer.vip4_bytes, owner.vip6_bytes + tunnel.peer.vip6_bytes

    def _route(self, packet: bytes | memoryview) -> core.Tunnel | None:
        version = packet[0] >> 4 if packet else 0
        if version == 4:
            return self.routes.get(bytes(packet[12:20]))
        if version == 6:
            return self.routes.get(bytes(packet[8:40]))
        return None

    def tunnel_for(self, owner: Any, fqdn: str) -> core.Tunnel | None:
        for t in self.by_index.values():
            if t.owner is owner and t.peer.fqdn == fqdn:
                return t
        return None

    def tunnels_of(self, owner: Any) -> list[core.Tunnel]:
        return [t for t in self.by_index.values() if t.owner is owner]

    # -- peer -> general node -------------------------------------------------

    def _deliver(self, tunnel: core.Tunnel, packet: memoryview, source: tuple[str, int]) -> None:
        """A peer may only speak from its own virtual IP, and only to the
        general node the tunnel belongs to."""
        owner, peer = tunnel.owner, tunnel.peer
        n = len(packet)
        version = packet[0] >> 4 if n else 0
        if version == 4 and n >= 20:
            ok = packet[12:16] == peer.vip4_bytes and packet[16:20] == owner.vip4_bytes
        elif version == 6 and n >= 40:
            ok = packet[8:24] == peer.vip6_bytes and packet[24:40] == owner.vip6_bytes
        else:
            ok = False
        if not ok:
            self.drops("inner addresses are not the tunnel's", source)
            return
        tunnel.rx_bytes += n
        if self.vnet:
            self.coalescer.add(packet, tunnel)
            return
        self._write_frame(PLAIN_HEADER + offload.finish_checksum(packet))

    def _write_frame(self, frame: bytes) -> None:
        """One coalesced or single frame (virtio header + IP packet) to the
        general node the packet is addressed to."""
        view = memoryview(frame)
        ip = view[VNET_HDR_LEN:]
        version = ip[0] >> 4
        owner = self.local.get(bytes(ip[16:20]) if version == 4 else bytes(ip[24:40]))
        if owner is None or owner.mac is None:
            self.drops("general node without a lease")
            return
        flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(view)
        # on a packet socket the offsets count from the Ethernet header
        if flags & F_NEEDS_CSUM:
            csum_start += ETH_HLEN
        if hdr_len:
            hdr_len += ETH_HLEN
        header = VNET_HDR.pack(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)
        self.lan_send([header, owner.mac + self.mac + ETHERTYPE[version], ip])

    def lan_send(self, parts: list) -> None:
        """One frame (virtio header first when the socket has one) out of the LAN port."""
        if not self.lan.vnet:
            parts = parts[1:]
        try:
            self.lan.sock.sendmsg(parts)
        except BlockingIOError:
            self.drops("LAN send buffer full")
            return
        except OSError as exc:
            self.drops("LAN write failed", None, str(exc))
            return
        self.lan_tx_frames += 1

    def send_frame(self, frame: bytes) -> None:
        """An Ethernet frame the adapter made itself (ARP, DHCP, DNS, ICMP)."""
        self.lan_send([PLAIN_HEADER, frame])


class OwnedPackets:
    """What one identity's Signaling Module sees of the shared Packet
    Handling Module: the tunnels it establishes are its own."""

    def __init__(
        self, packet: LanPacketHandling, owner: Any, on_install: Callable[[core.Tunnel], None] | None = None
    ) -> None:
        self.packet = packet
        self.owner = owner
        self.on_install = on_install

    def install(self, tunnel: core.Tunnel) -> core.Tunnel | None:
        tunnel.owner = self.owner
        old = self.packet.install(tunnel)
        if self.on_install is not None:
            self.on_install(tunnel)
        return old

    def tunnel_to(self, fqdn: str) -> core.Tunnel | None:
        return self.packet.tunnel_for(self.owner, fqdn)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.packet, name)
