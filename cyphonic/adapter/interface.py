"""Interface Handling Module (seed): hooks every frame the general nodes
send on the LAN port. One task reads the port's AF_PACKET socket and
classifies each frame, because the adapter, unlike a node, receives
everything through one interface (seed: "Difference in Processing methods"):

    ARP                              -> ARP responder
    UDP/67, UDP/547                  -> Address Configuration (DHCPv4/v6)
    ICMPv6 RS / NS                   -> router advertisement / NDP proxy
    UDP/53 to the adapter            -> the general node's resolver
    ICMP echo to the adapter         -> echo reply
    IP from a leased general node    -> its (general node, peer) tunnel,
                                        or another general node here

The buffer holds [pad][virtio header][Ethernet][IP]: moving the virtio
header onto the Ethernet header's place hands the node's offload path the
TUN-shaped frame it expects, without copying the packet.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
import time
from collections import deque

import trio

from cyphonic.adapter.address_configuration import AddressConfiguration
from cyphonic.adapter.general_nodes import GeneralNode, GeneralNodeManagement
from cyphonic.adapter.lan_packets import LanPacketHandling
from cyphonic.core import frames
from cyphonic.core.arp import ArpResponder
from cyphonic.core.frames import UdpDatagram
from cyphonic.core.ndp import NeighborProxy, is_router_solicitation
from cyphonic.core.tunnel import CAPSULE
from cyphonic.drops import Drops
from cyphonic.errors import AuthenticationError, ParseError
from cyphonic.kernel.packet_socket import ETH_HLEN, MAX_FRAME, PacketSocket
from cyphonic.wire.virtio import F_NEEDS_CSUM, PLAIN_HEADER, VNET_HDR_LEN

log = logging.getLogger("cyphonic.lan")

PAD = ETH_HLEN
IPV4, ARP, IPV6 = 0x0800, 0x0806, 0x86DD
ICMP, TCP, UDP, ICMPV6 = 1, 6, 17, 58
SYN = 0x02
DF = 0x4000
MAX_DNS_INFLIGHT = 64
_TOTAL = struct.Struct("!H")


class InterfaceHandling:
    def __init__(
        self,
        lan: PacketSocket,
        packet: LanPacketHandling,
        general_nodes: GeneralNodeManagement,
        addresses: AddressConfiguration,
        *,
        mtu: int,
        vip4: ipaddress.IPv4Address,
        prefix4: ipaddress.IPv4Network,
        vip6: ipaddress.IPv6Address,
        prefix6: ipaddress.IPv6Network,
    ) -> None:
        self.lan = lan
        self.packet = packet
        self.gns = general_nodes
        self.addresses = addresses
        self.mac = lan.mac
        self.mtu = mtu
        self.vip4, self.vip4_bytes, self.prefix4 = vip4, vip4.packed, prefix4
        self.vip6, self.vip6_bytes, self.prefix6 = vip6, vip6.packed, prefix6
        self.link_local_bytes = addresses.link_local.packed
        # the overlay prefix as integers: the ARP path compares one per request
        self._net4, self._mask4 = int(prefix4.network_address), int(prefix4.netmask)
        self.arp = ArpResponder(self.mac)
        self.ndp = NeighborProxy(self.mac)
        self.drops = Drops(log)
        self.arp_ms: deque[float] = deque(maxlen=1000)  # the seed's "ARP process time"
        self.arp_send_ms: deque[float] = deque(maxlen=1000)
        self.frames_in = 0
        self._dns = trio.CapacityLimiter(MAX_DNS_INFLIGHT)
        self.nursery: trio.Nursery | None = None

    async def run(self) -> None:
        sock = self.lan.sock
        buf = bytearray(PAD + MAX_FRAME)
        view = memoryview(buf)
        into = view[PAD:]
        hdr = VNET_HDR_LEN if self.lan.vnet else 0
        packet = self.packet
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            while True:
                await trio.lowlevel.wait_readable(sock)
                now = time.time()
                while True:
                    try:
                        n = sock.recv_into(into)
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        self.drops("LAN read failed", None, str(exc))
                        break
                    self.frames_in += 1
                    try:
                        self.frame(buf, view, PAD + n, hdr, now)
                    except (ParseError, AuthenticationError) as exc:
                        self.drops("malformed frame", None, str(exc).splitlines()[0])
                packet.flush_run()
                packet.flush()

    def frame(self, buf: bytearray, view: memoryview, end: int, hdr: int, now: float) -> None:
        e = PAD + hdr  # the Ethernet header
        if end - e < ETH_HLEN:
            self.drops("runt frame")
            return
        ethertype = buf[e + 12] << 8 | buf[e + 13]
        if ethertype == IPV4:
            self.ipv4(buf, view, e, end, hdr, now)
        elif ethertype == IPV6:
            self.ipv6(buf, view, e, end, hdr, now)
        elif ethertype == ARP:
            started = time.perf_counter()
            reply = self.arp.answer(view[e:end], self._answers_arp)
            if reply is not None:
                built = time.perf_counter()
                self.packet.send_frame(reply)
                # processing (frame read to reply built) apart from the send:
                # on veth the send runs the receiver's stack in this call
                self.arp_ms.append((built - started) * 1000)
                self.arp_send_ms.append((time.perf_counter() - built) * 1000)
        else:
            self.drops("not ARP, IPv4 or IPv6")

    def _partial(self, buf: bytearray, hdr: int) -> bool:
        """Does the kernel say the L4 checksum is not yet complete?"""
        return bool(hdr and buf[PAD] & F_NEEDS_CSUM)

    # -- IPv4 ----------------------------------------------------------------

    def ipv4(self, buf: bytearray, view: memoryview, e: int, end: int, hdr: int, now: float) -> None:
        ip = e + ETH_HLEN
        if end - ip < 20 or buf[ip] >> 4 != 4 or buf[ip] & 0x0F < 5:
            self.drops("malformed IPv4 header")
            return
        total = _TOTAL.unpack_from(buf, ip + 2)[0]
        if total < 20 or ip + total > end:
            self.drops("IPv4 length beyond the frame")
            return
        end = ip + total  # Ethernet padding is not part of the packet
        proto = buf[ip + 9]
        dst = bytes(buf[ip + 16 : ip + 20])
        if dst == self.vip4_bytes or dst[0] >= 224 or dst == b"\xff\xff\xff\xff":
            self.ipv4_control(buf, view, e, end, hdr, proto, dst, now)
            return
        gn = self._sender(buf, e, ip + 12, 4)
        if gn is None:
            return
        if not self._size_fits(buf, ip, total, hdr, 4, gn, view, e, end):
            return
        if proto == TCP:
            self._clamp(buf, view, ip, ip + (buf[ip] & 0x0F) * 4, end, hdr, self.mtu - 40)
        self._forward(buf, view, e, end, hdr, gn, gn.vip4_bytes + dst, dst, now)

    def ipv4_control(
        self, buf: bytearray, view: memoryview, e: int, end: int, hdr: int, proto: int, dst: bytes, now: float
    ) -> None:
        frame = view[e:end]
        if proto == UDP:
            udp = frames.parse_udp(frame, verify_checksum=not self._partial(buf, hdr))
            if udp.dport == 67:
                self.addresses.dhcp4(udp, now)
            elif udp.dport == 53 and dst == self.vip4_bytes:
                self._dns_query(udp, 4)
            else:
                self.drops("UDP for no service of the adapter")
        elif proto == ICMP and dst == self.vip4_bytes:
            if self.gns.by_mac.get(bytes(buf[e + 6 : e + 12])) is None:
                self.drops("ping from a stranger")
                return
            reply = frames.echo_reply(frame, self.mac)
            if reply is not None:
                self.packet.send_frame(reply)
        else:
            self.drops("IPv4 for the adapter it does not serve")

    # -- IPv6 ----------------------------------------------------------------

    def ipv6(self, buf: bytearray, view: memoryview, e: int, end: int, hdr: int, now: float) -> None:
        ip = e + ETH_HLEN
        if end - ip < 40 or buf[ip] >> 4 != 6:
            self.drops("malformed IPv6 header")
            return
        total = 40 + _TOTAL.unpack_from(buf, ip + 4)[0]
        if ip + total > end:
            self.drops("IPv6 length beyond the frame")
            return
        end = ip + total
        dst = bytes(buf[ip + 24 : ip + 40])
        # neighbour discovery is answered here even when unicast to a peer's
        # address (a device re-checking a neighbour entry: RFC 4861 7.3.3)
        ndp = buf[ip + 6] == ICMPV6 and end - ip > 40 and buf[ip + 40] in (133, 135)
        if ndp or dst[0] == 0xFF or dst == self.vip6_bytes or dst == self.link_local_bytes:
            self.ipv6_control(buf, view, e, end, hdr, dst, now)
            return
        gn = self._sender(buf, e, ip + 8, 6)
        if gn is None:
            return
        if not self._size_fits(buf, ip, total, hdr, 6, gn, view, e, end):
            return
        if buf[ip + 6] == TCP:
            self._clamp(buf, view, ip, ip + 40, end, hdr, self.mtu - 60)
        self._forward(buf, view, e, end, hdr, gn, gn.vip6_bytes + dst, dst, now)

    def ipv6_control(
        self, buf: bytearray, view: memoryview, e: int, end: int, hdr: int, dst: bytes, now: float
    ) -> None:
        ip = e + ETH_HLEN
        nh = buf[ip + 6]
        frame = view[e:end]
        if nh == ICMPV6 and end - ip > 40:
            kind = buf[ip + 40]
            if kind == 135:
                if bytes(buf[e + 6 : e + 12]) not in self.gns.by_mac:
                    self.drops("neighbour solicitation from a stranger")
                    return
                reply = self.ndp.answer(frame, self._answers_ndp)
                if reply is not None:
                    self.packet.send_frame(reply)
            elif kind == 133:
                if is_router_solicitation(frame):
                    self.addresses.router_solicitation(bytes(buf[e + 6 : e + 12]))
                else:
                    self.drops("invalid router solicitation")
            elif kind == 128 and dst in (self.vip6_bytes, self.link_local_bytes):
                reply = frames.echo_reply(frame, self.mac)
                if reply is not None and self.gns.by_mac.get(bytes(buf[e + 6 : e + 12])) is not None:
                    self.packet.send_frame(reply)
            # other ICMPv6 (NA, MLD reports, ...) needs no answer
        elif nh == UDP:
            udp = frames.parse_udp(frame, verify_checksum=not self._partial(buf, hdr))
            if udp.dport == 547:
                self.addresses.dhcpv6(udp, now)
            elif udp.dport == 53 and dst == self.vip6_bytes:
                self._dns_query(udp, 6)
            else:
                self.drops("UDP for no service of the adapter")
        elif nh != 0:  # hop-by-hop options: MLD reports, not ours to answer
            self.drops("IPv6 for the adapter it does not serve")

    # -- the data path -------------------------------------------------------

    def _sender(self, buf: bytearray, e: int, src: int, version: int) -> GeneralNode | None:
        """The general node a data frame is from, if its MAC and source
        address match a lease; else a counted drop."""
        gn = self.gns.by_mac.get(bytes(buf[e + 6 : e + 12]))
        size = 4 if version == 4 else 16
        address = bytes(buf[src : src + size])
        if gn is None or self.packet.local.get(address) is not gn:
            self.drops("source MAC and address match no lease", ":".join(f"{b:02x}" for b in buf[e + 6 : e + 12]))
            return None
        return gn

    def _size_fits(
        self, buf: bytearray, ip: int, total: int, hdr: int, version: int, gn: GeneralNode, view, e: int, end: int
    ) -> bool:
        """A packet larger than the overlay MTU (not a GSO super-packet,
        whose segments the MSS already fits): IPv4 with DF and every IPv6
        packet is answered with ICMP, so the sender's PMTU discovery works;
        IPv4 without DF goes on (the outer datagram is fragmented)."""
        if total <= self.mtu or (hdr and buf[PAD + 1]):
            return True
        packet = view[ip:end]
        if version == 4:
            if not _TOTAL.unpack_from(buf, ip + 6)[0] & DF:
                return True
            reply = frames.icmp_frag_needed(self.mac, gn.mac, self.vip4, packet, self.mtu)
        else:
            reply = frames.icmp6_packet_too_big(self.mac, gn.mac, self.vip6, packet, self.mtu)
        self.packet.send_frame(reply)
        self.drops("larger than the overlay MTU (ICMP sent)")
        return False

    def _clamp(self, buf: bytearray, view: memoryview, ip: int, l4: int, end: int, hdr: int, mss: int) -> None:
        """A TCP SYN's MSS to what fits the overlay MTU (TCP header at `l4`)."""
        if end - l4 >= 20 and buf[l4 + 13] & SYN:
            frames.clamp_mss(view[ip:end], mss, self._partial(buf, hdr))

    def _forward(
        self,
        buf: bytearray,
        view: memoryview,
        e: int,
        end: int,
        hdr: int,
        gn: GeneralNode,
        key: bytes,
        dst: bytes,
        now: float,
    ) -> None:
        packet = self.packet
        local = packet.local.get(dst)
        if local is not None:
            # general node to general node on this adapter: switched here
            buf[e : e + 6] = local.mac
            buf[e + 6 : e + 12] = self.mac
            packet.lan_send([view[PAD:end]] if hdr else [b"", view[e:end]])
            return
        tunnel = packet.routes.get(key)
        if tunnel is None:
            # a tunnel being established (after DNS, or again to a peer the
            # general node talked to before) holds the packet for it
            gns = self.gns
            if (dst in gn.staged or gns.reroute(gn, dst, now)) and gns.stage(
                gn, dst, self._tun_frame(buf, view, e, end, hdr)
            ):
                return
            self.drops("no tunnel for destination (ask the adapter's DNS first)")
            return
        if hdr:
            # the virtio header onto the Ethernet header's last bytes: a TUN frame
            start = e + ETH_HLEN - VNET_HDR_LEN
            buf[start : start + VNET_HDR_LEN] = buf[PAD : PAD + VNET_HDR_LEN]
            packet.send_frame_sealed(view[start:end], tunnel)
        else:
            packet.send(tunnel, CAPSULE, bytes(view[e + ETH_HLEN : end]))

    @staticmethod
    def _tun_frame(buf: bytearray, view: memoryview, e: int, end: int, hdr: int) -> bytes:
        """A copy of the packet as the node's TUN would give it: virtio header + IP."""
        header = bytes(buf[PAD : PAD + VNET_HDR_LEN]) if hdr else PLAIN_HEADER
        return header + bytes(view[e + ETH_HLEN : end])

    # -- ARP, NDP, DNS -------------------------------------------------------

    def _answers_arp(self, target: bytes, sender_mac: bytes) -> bool:
        """The adapter's MAC for its own address and any peer's, to general
        nodes it serves; never for a general node's own address."""
        if sender_mac not in self.gns.by_mac or target in self.gns.by_vip:
            return False
        return target == self.vip4_bytes or int.from_bytes(target, "big") & self._mask4 == self._net4

    def _answers_ndp(self, target: bytes) -> bool:
        if target in self.gns.by_vip:
            return False
        return target in (self.vip6_bytes, self.link_local_bytes) or ipaddress.IPv6Address(target) in self.prefix6

    def _dns_query(self, udp: UdpDatagram, version: int) -> None:
        gn = self.gns.by_mac.get(udp.src_mac)
        if gn is None or gn.state != "ready" or udp.src_ip not in (gn.vip4, gn.vip6):
            self.drops("DNS query from no general node", udp.src_ip)
            return
        token = object()
        try:
            self._dns.acquire_on_behalf_of_nowait(token)
        except trio.WouldBlock:
            self.drops("too many DNS queries in flight", udp.src_ip)
            return
        assert self.nursery is not None
        self.nursery.start_soon(self._answer_dns, gn, udp, token)

    async def _answer_dns(self, gn: GeneralNode, udp: UdpDatagram, token: object) -> None:
        try:
            reply = await gn.resolver.answer(udp.payload)
            if reply is not None:
                self.packet.send_frame(
                    frames.udp_frame(self.mac, udp.src_mac, udp.dst_ip, udp.src_ip, 53, udp.sport, reply)
                )
        except OSError as exc:
            self.drops("cannot answer DNS", udp.src_ip, str(exc))
        except (ParseError, AuthenticationError) as exc:
            self.drops("DNS query failed", udp.src_ip, str(exc).splitlines()[0])
        finally:
            self._dns.release_on_behalf_of(token)
