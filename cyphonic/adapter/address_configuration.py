"""Address Configuration Module (seed): gives each general node the virtual
IP the AS assigned to it. DHCPv4 for every general node; router
advertisements (M and O set, the overlay prefix on-link, MTU, RDNSS) and
DHCPv6 (IA_NA) for those enrolled with IPv6.

The adapter's own virtual IPv4 is the general nodes' DHCP server, router
and DNS server: it lies in the overlay prefix the subnet mask names, so the
general node ARPs for it and for every peer, and the adapter answers.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from pathlib import Path

import trio

from cyphonic.adapter.general_nodes import GeneralNode, GeneralNodeManagement, mac_text
from cyphonic.adapter.lan_packets import LanPacketHandling
from cyphonic.core import dhcp as dhcpv4
from cyphonic.core import dhcp6, frames, ndp
from cyphonic.core import leases as lease_events
from cyphonic.core.frames import UdpDatagram
from cyphonic.drops import Drops
from cyphonic.errors import ParseError

log = logging.getLogger("cyphonic.dhcp")

BROADCAST_MAC = b"\xff" * 6
BROADCAST4 = ipaddress.IPv4Address("255.255.255.255")
RA_INTERVAL = 200.0  # unsolicited RAs (RFC 4861 6.2.1: MaxRtrAdvInterval default 600 s)


class AddressConfiguration:
    def __init__(
        self,
        cfg: dict,
        *,
        mac: bytes,
        vip4: ipaddress.IPv4Address,
        prefix4: ipaddress.IPv4Network,
        vip6: ipaddress.IPv6Address,
        prefix6: ipaddress.IPv6Network,
        domain: str,
        general_nodes: GeneralNodeManagement,
        packet: LanPacketHandling,
    ) -> None:
        self.mac = mac
        self.vip4 = vip4
        self.vip6 = vip6
        self.prefix6 = prefix6
        self.mtu = cfg["mtu"]
        self.gns = general_nodes
        self.packet = packet
        self.drops = Drops(log)
        self.link_local = ndp.link_local(mac)
        self.leases_file = Path(cfg["leases"])
        try:
            self.leases = lease_events.Leases.load(self.leases_file)
        except ParseError as exc:
            log.error("%s is corrupt (%s): starting without leases", self.leases_file, exc)
            self.leases = lease_events.Leases()
        self.dhcp = dhcpv4.DhcpServer(
            server_ip=vip4,
            prefix_len=prefix4.prefixlen,
            router=vip4,
            dns=[vip4],
            domain_search=[domain],
            mtu=self.mtu,
            lease_time=cfg["lease_time"],
            leases=self.leases,
            address_of=general_nodes.address_of,
            known=general_nodes.known,
        )
        self.dhcp6 = dhcp6.Dhcp6Server(
            mac=mac,
            dns=[vip6],
            domain_search=[domain],
            lifetime=cfg["lease_time"],
            address_of=general_nodes.address6_of,
            known=general_nodes.known6,
        )
        self.send_frame: Callable[[bytes], None] = packet.send_frame
        self._held6: dict[bytes, UdpDatagram] = {}

    # -- what the Interface Handling Module hands over -------------------------

    def dhcp4(self, udp: UdpDatagram, now: float) -> None:
        self._send4(self.dhcp.receive(udp.payload, udp.src_mac, now))
        self._events(self.dhcp, now)

    def dhcpv6(self, udp: UdpDatagram, now: float) -> None:
        self._send6(self.dhcp6.receive(udp.payload, udp.src_mac, now), udp)
        self._events(self.dhcp6, now, udp)

    def _send6(self, replies: list[bytes], to: UdpDatagram) -> None:
        for reply in replies:
            self.send_frame(frames.udp_frame(self.mac, to.src_mac, self.link_local, to.src_ip, 547, 546, reply))

    def router_solicitation(self, src_mac: bytes) -> None:
        if self.gns.known6(src_mac):
            self.send_frame(self._advertisement(src_mac))

    def _advertisement(self, dst_mac: bytes | None = None) -> bytes:
        if dst_mac is None:
            return ndp.router_advertisement(self.mac, self.prefix6, self.mtu, self.vip6)
        # a solicited RA may go to the solicitor's MAC (RFC 4861 6.2.6), still to all-nodes
        return ndp.router_advertisement(self.mac, self.prefix6, self.mtu, self.vip6, dst_mac=dst_mac)

    def ready(self, gn: GeneralNode) -> None:
        """`gn` is logged in and registered: answer what its DHCP client
        asked meanwhile; a lease kept from before a restart is live again."""
        now = time.time()
        lease = self.leases.get(gn.mac)
        if lease is not None and lease.expires > now:
            self._bind(gn, 4, lease.expires)
        if gn.ipv6:
            # the address is the AS's, for good: a DHCPv6 client renewing
            # after a restart keeps its address (no v6 lease file)
            self._bind(gn, 6, now + self.dhcp6.lifetime)
        self._send4(self.dhcp.address_ready(gn.mac, now))
        self._events(self.dhcp, now)
        if gn.ipv6:
            self.send_frame(self._advertisement())
            held = self._held6.pop(gn.mac, None)
            replies = self.dhcp6.address_ready(gn.mac, now)
            if held is not None:
                self._send6(replies, held)
            self._events(self.dhcp6, now)

    def restore(self, now: float) -> None:
        """After a restart: log in every general node that still holds a
        lease, so peers reach it before it renews."""
        for mac, lease in list(self.leases.items()):
            if lease.expires > now and self.gns.known(mac):
                log.info("lease of %s (%s) kept across the restart", mac_text(mac), lease.address)
                self.gns.configure(mac)
        # DHCPv6 bindings are not kept on disk; the address is the AS's for
        # good, so an IPv6 general node is logged in at once, without waiting
        # for its client to renew
        for mac, gn in list(self.gns.by_mac.items()):
            if gn.ipv6:
                self.gns.configure(mac)

    # -- replies and events -----------------------------------------------------

    def _send4(self, replies: list[dhcpv4.Reply]) -> None:
        for r in replies:
            if r.broadcast:
                frame = frames.udp_frame(self.mac, BROADCAST_MAC, self.vip4, BROADCAST4, 67, 68, r.payload)
            else:
                frame = frames.udp_frame(self.mac, r.dst_mac, self.vip4, r.dst_ip, 67, 68, r.payload)
            self.send_frame(frame)

    def _events(self, server, now: float, udp: UdpDatagram | None = None) -> None:
        while (event := server.next_event()) is not None:
            if isinstance(event, lease_events.AddressNeeded):
                if udp is not None:  # DHCPv6: where the held message's answer goes (known MACs only)
                    self._held6[event.mac] = udp
                self.gns.configure(event.mac)
                continue
            gn = self.gns.by_mac.get(event.mac)
            version = event.address.version
            if isinstance(event, lease_events.LeaseGranted):
                if gn is not None:
                    self._bind(gn, version, event.expires)
            elif isinstance(event, lease_events.LeaseReleased):
                log.info("%s released %s", mac_text(event.mac), event.address)
                if gn is not None:
                    self._unbind(gn, version)
            elif isinstance(event, lease_events.LeaseDeclined):
                log.error(
                    "%s declined %s: another device on the LAN uses that address", mac_text(event.mac), event.address
                )
                if gn is not None:
                    self._unbind(gn, version)
            if version == 4:
                self._save()

    def _bind(self, gn: GeneralNode, version: int, expires: float) -> None:
        if version == 4:
            gn.lease4 = expires
            self.packet.local[gn.vip4_bytes] = gn
        else:
            gn.lease6 = expires
            self.packet.local[gn.vip6_bytes] = gn

    def _unbind(self, gn: GeneralNode, version: int) -> None:
        key = gn.vip4_bytes if version == 4 else gn.vip6_bytes
        if version == 4:
            gn.lease4 = None
        else:
            gn.lease6 = None
        if self.packet.local.get(key) is gn:
            del self.packet.local[key]

    def _save(self) -> None:
        try:
            self.leases.save(self.leases_file)
        except OSError as exc:
            log.error("cannot save leases to %s: %s", self.leases_file, exc)

    async def run(self) -> None:
        """Lease expiry, and unsolicited RAs while IPv6 general nodes exist."""
        next_ra = 0.0
        while True:
            now = time.time()
            self.dhcp.expire(now)
            self._events(self.dhcp, now)
            self.dhcp6.expire(now)
            self._events(self.dhcp6, now)
            for gn in self.gns.by_mac.values():
                if gn.lease6 is not None and gn.lease6 < now:
                    self._unbind(gn, 6)
            if now >= next_ra and any(gn.ipv6 and gn.state == "ready" for gn in self.gns.by_mac.values()):
                self.send_frame(self._advertisement())
                next_ra = now + RA_INTERVAL
            await trio.sleep(1.0)
