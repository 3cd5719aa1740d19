"""A LAN in memory for the adapter daemon: its port is one end of a
datagram socketpair with the attributes of `cyphonic.kernel.packet_socket.PacketSocket`
that the daemon uses, and the other end is the wire the general nodes share.

Each datagram on the pair is one frame as `PACKET_VNET_HDR` gives it: a
10-byte virtio-net header, then the Ethernet frame. The test's end keeps
every frame the adapter sends (a reader task), so a test can wait for one
that matches with a deadline, or look at everything sent since a mark.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

import trio
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw

from cyphonic.core.checksum import ones_sum
from cyphonic.wire.virtio import F_NEEDS_CSUM, PLAIN_HEADER, VNET_HDR, VNET_HDR_LEN

ADAPTER_MAC = bytes.fromhex("02005e0053fe")
BROADCAST = "ff:ff:ff:ff:ff:ff"
MIN_FRAME = 60  # without the FCS: shorter frames are padded (IEEE 802.3)


def mac_text(mac: bytes) -> str:
    return mac.hex(":")


class FakeLan:
    """The adapter's LAN port (`.sock`, `.mac`, `.vnet`, `.name`, `.mtu`,
    `fileno()`, `close()`) and, as `.wire`, the test's end of it."""

    def __init__(self, name: str = "lan-test", mac: bytes = ADAPTER_MAC, mtu: int = 1500) -> None:
        port, wire = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        port.setblocking(False)
        self.sock = port
        self.mac = mac
        self.vnet = True
        self.name = name
        self.mtu = mtu
        self.wire = trio.socket.from_stdlib_socket(wire)
        self.sent: list[bytes] = []  # every frame the adapter sent, virtio header included
        self._arrived = trio.Event()

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    # -- the test's end ------------------------------------------------------

    async def read_forever(self) -> None:
        """Keep every frame the adapter sends (the pair holds only a few)."""
        while True:
            data = await self.wire.recv(1 << 17)
            if not data:  # the adapter never sends an empty frame: its end is gone
                return
            self.sent.append(data)
            self._arrived.set()
            self._arrived = trio.Event()

    async def send(self, frame: bytes | Packet, header: bytes = PLAIN_HEADER) -> None:
        """One frame onto the LAN, behind a virtio header (plain: no offload),
        padded to the Ethernet minimum as a NIC sends it."""
        data = bytes(frame)
        await self.wire.send(header + data + bytes(max(0, MIN_FRAME - len(data))))

    async def send_raw(self, datagram: bytes) -> None:
        """Bytes as the port reads them, virtio header or not."""
        await self.wire.send(datagram)

    def mark(self) -> int:
        return len(self.sent)

    def frames(self, since: int = 0) -> list[Ether]:
        return [wire_frame(d) for d in self.sent[since:]]

    async def expect(self, match: Callable[[Ether], bool], since: int = 0, timeout: float = 10) -> Ether:
        """The first frame since `since` that `match` accepts, waiting for it."""
        with trio.fail_after(timeout):
            at = since
            while True:
                while at < len(self.sent):
                    frame = wire_frame(self.sent[at])
                    at += 1
                    if match(frame):
                        return frame
                await self._arrived.wait()


def wire_frame(datagram: bytes) -> Ether:
    """The Ethernet frame the kernel puts on the wire for a write to the
    port: NEEDS_CSUM honoured (skb_checksum_help; on a packet socket
    csum_start counts from the Ethernet header). A GSO frame is left whole."""
    flags, _gso_type, _hdr_len, _gso_size, start, offset = VNET_HDR.unpack_from(datagram)
    frame = bytearray(datagram[VNET_HDR_LEN:])
    if flags & F_NEEDS_CSUM:
        value = ~ones_sum(frame[start:]) & 0xFFFF
        struct.pack_into("!H", frame, start + offset, value or 0xFFFF)
    return Ether(bytes(frame))


class Device:
    """A stock device on the LAN (a general node), speaking through scapy."""

    def __init__(self, lan: FakeLan, mac: str) -> None:
        self.lan = lan
        self.mac = mac
        self.mac_bytes = bytes.fromhex(mac.replace(":", ""))
        self.ip: str | None = None  # its leased address, once it has one
        self.xid = int.from_bytes(self.mac_bytes[2:], "big")

    def ether(self, dst: str | None = None) -> Ether:
        return Ether(src=self.mac, dst=dst or mac_text(self.lan.mac))

    # -- DHCPv4 ---------------------------------------------------------------

    def dhcp(self, kind: str, *options, ciaddr: str = "0.0.0.0") -> Ether:
        bootp = BOOTP(chaddr=self.mac_bytes + bytes(10), xid=self.xid, ciaddr=ciaddr, flags=0)
        opts = [("message-type", kind), *options, ("param_req_list", [1, 3, 6, 15, 26, 51]), "end"]
        return (
            self.ether(BROADCAST)
            / IP(src="0.0.0.0", dst="255.255.255.255")
            / UDP(sport=68, dport=67)
            / bootp
            / DHCP(options=opts)
        )

    def discover(self) -> Ether:
        return self.dhcp("discover")

    def request(self, address: str, server: str) -> Ether:
        return self.dhcp("request", ("requested_addr", address), ("server_id", server))

    def is_dhcp_reply(self, kind: int) -> Callable[[Ether], bool]:
        def match(frame: Ether) -> bool:
            return (
                DHCP in frame
                and frame[BOOTP].op == 2
                and frame[BOOTP].xid == self.xid
                and dhcp_options(frame).get("message-type") == kind
            )

        return match

    async def lease(self, timeout: float = 10) -> tuple[Ether, Ether]:
        """DISCOVER, OFFER, REQUEST, ACK: (the offer, the ack); `ip` is set."""
        mark = self.lan.mark()
        await self.lan.send(self.discover())
        offer = await self.lan.expect(self.is_dhcp_reply(OFFER), mark, timeout)
        address = offer[BOOTP].yiaddr
        server = dhcp_options(offer)["server_id"]
        mark = self.lan.mark()
        await self.lan.send(self.request(address, server))
        ack = await self.lan.expect(self.is_dhcp_reply(ACK), mark, timeout)
        self.ip = ack[BOOTP].yiaddr
        return offer, ack

    # -- what a leased device sends ------------------------------------------

    def ip_to(self, dst: str, **fields) -> IP:
        assert self.ip is not None, "lease an address first"
        return IP(src=fields.pop("src", self.ip), dst=dst, **fields)

    def arp_for(self, target: str) -> Ether:
        return self.ether(BROADCAST) / ARP(op=1, hwsrc=self.mac, psrc=self.ip or "0.0.0.0", pdst=target)

    def dns_query(self, server: str, name: str, qtype: str = "A", qid: int = 0x5A5A) -> Ether:
        query = DNS(id=qid, rd=1, qd=DNSQR(qname=name, qtype=qtype))
        return self.ether() / self.ip_to(server) / UDP(sport=40053, dport=53) / query

    def ping(self, dst: str, seq: int = 1, payload: bytes = b"ping through the adapter") -> Ether:
        return self.ether() / self.ip_to(dst) / ICMP(type=8, id=0x4242, seq=seq) / Raw(payload)

    def syn(self, dst: str, mss: int) -> Ether:
        tcp = TCP(sport=40000, dport=80, flags="S", seq=1000, options=[("MSS", mss), ("SAckOK", b"")])
        return self.ether() / self.ip_to(dst) / tcp


DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK = 1, 2, 3, 4, 5, 6


def dhcp_options(frame: Ether) -> dict:
    return {o[0]: (o[1] if len(o) == 2 else o[1:]) for o in frame[DHCP].options if isinstance(o, tuple)}
