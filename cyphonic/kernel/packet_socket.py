"""The adapter's LAN port as one `AF_PACKET` socket (DESIGN section 4).

The kernel keeps no IPv4 address on the port (and IPv6 is disabled there):
every frame the general nodes send reaches the adapter through this socket
and nothing else, and every frame it sends goes out through it.

- `PACKET_VNET_HDR`: each frame comes with the same 10-byte virtio-net
  header as a TUN read, so a GRO'd or GSO super-packet from the LAN is one
  frame with its gso_size, not an oversize frame; writes may carry one.
- `PACKET_IGNORE_OUTGOING`: the adapter never reads its own frames back.
- A classic BPF filter: only ARP, IPv4 and IPv6 frames addressed to this
  port's MAC, broadcast or multicast wake Python.
- `PACKET_MR_ALLMULTI`: a real NIC passes the solicited-node multicast of
  every peer address the adapter answers NDP for.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import socket
import struct

from pyroute2 import IPRoute

from cyphonic.udp import size_buffers
from cyphonic.wire.virtio import VNET_HDR_LEN

log = logging.getLogger("cyphonic.lan")

# Python's socket module lacks these (linux/if_packet.h, asm/socket.h)
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_ALLMULTI = 2
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
SO_ATTACH_FILTER = 26
ETH_P_ALL = 0x0003
ETH_P_IP, ETH_P_ARP, ETH_P_IPV6 = 0x0800, 0x0806, 0x86DD
ETH_HLEN = 14
MAX_FRAME = 65535 + ETH_HLEN + VNET_HDR_LEN

# classic BPF opcodes (linux/filter.h)
_LD_B_ABS, _LD_H_ABS, _LD_W_ABS = 0x30, 0x28, 0x20
_JEQ_K, _JSET_K, _RET_K = 0x15, 0x45, 0x06
ACCEPT = 0x40000  # bytes of a frame to keep: all of it


def frame_filter(mac: bytes) -> list[tuple[int, int, int, int]]:
    """(code, jt, jf, k) of a program accepting ARP/IPv4/IPv6 frames sent
    to `mac`, to broadcast or to a multicast group; jumps are relative."""
    hi, lo = struct.unpack("!IH", mac)
    return [
        (_LD_B_ABS, 0, 0, 0),  # 0: first byte of the destination MAC
        (_JSET_K, 4, 0, 1),  # 1: group bit (broadcast, multicast) -> 6
        (_LD_W_ABS, 0, 0, 0),  # 2
        (_JEQ_K, 0, 7, hi),  # 3: not ours -> drop (11)
        (_LD_H_ABS, 0, 0, 4),  # 4
        (_JEQ_K, 0, 5, lo),  # 5: not ours -> drop (11)
        (_LD_H_ABS, 0, 0, 12),  # 6: EtherType
        (_JEQ_K, 2, 0, ETH_P_IP),  # 7 -> accept (10)
        (_JEQ_K, 1, 0, ETH_P_ARP),  # 8 -> accept
        (_JEQ_K, 0, 1, ETH_P_IPV6),  # 9 -> accept / drop
        (_RET_K, 0, 0, ACCEPT),  # 10
        (_RET_K, 0, 0, 0),  # 11
    ]


class PacketSocket:
    """A non-blocking raw socket bound to one interface."""

    def __init__(self, ifname: str, *, vnet: bool = True) -> None:
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                raise OSError(f"no interface named {ifname!r}")
            self.index = found[0]
            link = ipr.get_links(self.index)[0]
            self.mac = bytes.fromhex(link.get_attr("IFLA_ADDRESS").replace(":", ""))
            self.mtu = link.get_attr("IFLA_MTU")
        self.name = ifname
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            self.vnet = vnet and self._enable_vnet(sock)
            with contextlib.suppress(OSError):  # kernels before 4.20 send our own frames back too
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            self._attach(sock, frame_filter(self.mac))
            sock.bind((ifname, ETH_P_ALL))
            mreq = struct.pack("iHH8s", self.index, PACKET_MR_ALLMULTI, 0, b"")
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            # a burst from the LAN must not overflow the receive buffer
            # (net.core.rmem_max alone holds ~70 full-size frames)
            size_buffers(sock)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        # frames already queued before the filter was attached may be anything
        self.drain()

    @staticmethod
    def _enable_vnet(sock: socket.socket) -> bool:
        try:
            sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            return True
        except OSError as exc:
            log.info("LAN socket refuses PACKET_VNET_HDR (%s): one frame per packet", exc)
            return False

    @staticmethod
    def _attach(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
        instructions = b"".join(struct.pack("HBBI", *ins) for ins in program)
        buffer = ctypes.create_string_buffer(instructions)
        # struct sock_fprog: unsigned short len; (padding) struct sock_filter *filter
        fprog = struct.pack("HL", len(program), ctypes.addressof(buffer))
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                self.sock.recv(MAX_FRAME)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


def isolate(ifname: str) -> None:
    """No IPv4 address and no IPv6 on the LAN port, and the link up: the
    kernel must neither answer the general nodes nor route their frames."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise OSError(f"no interface named {ifname!r}")
        index = found[0]
        try:
            with open(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", "w") as f:
                f.write("1")
        except OSError as exc:
            log.warning("cannot disable IPv6 on %s: %s", ifname, exc)
        for msg in ipr.get_addr(index=index, family=socket.AF_INET):
            ipr.addr("del", index=index, address=msg.get_attr("IFA_ADDRESS"), prefixlen=msg["prefixlen"])
            log.warning("removed %s from %s: the LAN port carries no address", msg.get_attr("IFA_ADDRESS"), ifname)
        ipr.link("set", index=index, state="up")
