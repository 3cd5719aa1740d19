"""A TUN device, created with the TUNSETIFF ioctl and configured through
netlink (pyroute2).

With `offload=True` the device is opened with IFF_VNET_HDR and each offload
(checksum, TSO4/6, USO4/6) is probed: reads then return GSO super-packets
of up to 64 KB behind a virtio-net header (DESIGN section 10). A kernel
that refuses the header or TSO leaves the device on the plain path.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import struct

from pyroute2 import IPRoute

from cyphonic.wire.virtio import VNET_HDR_LEN

log = logging.getLogger("cyphonic.tun")

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000

TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40

OFFLOAD_NAMES = {TUN_F_CSUM: "csum", TUN_F_TSO4: "tso4", TUN_F_TSO6: "tso6", TUN_F_USO4: "uso4", TUN_F_USO6: "uso6"}
# Tried in this order, most first; each step drops what the kernel refused.
OFFLOAD_SETS = (
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6,
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
)


class Tun:
    """An open, non-blocking TUN device (closed with the daemon)."""

    def __init__(self, name: str, offload: bool = False) -> None:
        self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self.vnet = False
        self.offloads = 0
        flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if offload else 0)
        try:
            result = fcntl.ioctl(self.fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
        except OSError:
            if not offload:
                raise
            log.info("TUN refuses IFF_VNET_HDR: plain data path")
            result = fcntl.ioctl(self.fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
        else:
            self.vnet = offload and self._probe_offloads()
        self.name = result[:16].rstrip(b"\0").decode()

    def _probe_offloads(self) -> bool:
        try:
            fcntl.ioctl(self.fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
        except OSError as exc:
            log.info("TUN refuses a %d-byte virtio header (%s): plain data path", VNET_HDR_LEN, exc)
            return False
        for wanted in OFFLOAD_SETS:
            try:
                fcntl.ioctl(self.fd, TUNSETOFFLOAD, wanted)
            except OSError:
                continue
            self.offloads = wanted
            return True
        # The virtio header stays on (it cannot be removed); with no offloads
        # every read is one plain packet behind it, which the offload path handles.
        fcntl.ioctl(self.fd, TUNSETOFFLOAD, 0)
        return True

    @property
    def offload_names(self) -> list[str]:
        return [name for bit, name in OFFLOAD_NAMES.items() if self.offloads & bit]

    def configure(
        self,
        mtu: int,
        vip4: ipaddress.IPv4Address,
        prefix4: int,
        vip6: ipaddress.IPv6Address,
        prefix6: int,
    ) -> None:
        # No duplicate address detection: the AS guarantees uniqueness, and
        # DAD would leave the virtual IPv6 "tentative" for a second or two.
        try:
            with open(f"/proc/sys/net/ipv6/conf/{self.name}/accept_dad", "w") as f:
                f.write("0")
        except OSError:
            pass
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname=self.name)[0]
            ipr.link("set", index=index, mtu=mtu, state="up")
            ipr.addr("replace", index=index, address=str(vip4), prefixlen=prefix4)
            ipr.addr("replace", index=index, address=str(vip6), prefixlen=prefix6)

    def close(self) -> None:
        os.close(self.fd)
