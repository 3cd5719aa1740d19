"""A TUN device, created with the TUNSETIFF ioctl and configured through
netlink (pyroute2)."""

from __future__ import annotations

import fcntl
import ipaddress
import os
import struct

from pyroute2 import IPRoute

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


class Tun:
    """An open, non-blocking TUN device (closed with the daemon)."""

    def __init__(self, name: str) -> None:
        self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        ifr = struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI)
        result = fcntl.ioctl(self.fd, TUNSETIFF, ifr)
        self.name = result[:16].rstrip(b"\0").decode()

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
