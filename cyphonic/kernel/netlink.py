"""Addresses of this host, read through netlink, and the kernel's
notice that they changed."""

from __future__ import annotations

import ipaddress
import select
import socket
from collections.abc import Callable, Set

import trio
from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import (
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_IPV6_ROUTE,
    RTMGRP_LINK,
)

# Interfaces whose addresses are another overlay's (ours, Nebula, WireGuard):
# reporting them as locators would tunnel CYPHONIC through another tunnel.
OVERLAY_KINDS = frozenset({"tun", "wireguard"})


def global_addresses(exclude: Set[str] = frozenset()) -> list[str]:
    """Every global-scope address of this host (IPv4 and IPv6), except the
    overlay's own, those on tunnel interfaces and those of a family without
    a default route (an address with no way out is no uplink: a link that
    went down keeps its IPv4 address); these are the locators a node
    reports to the NMS."""
    out = []
    with IPRoute() as ipr:
        overlays = {link["index"] for link in ipr.get_links() if _kind(link) in OVERLAY_KINDS}
        routed = {f for f in (socket.AF_INET, socket.AF_INET6) if ipr.get_default_routes(family=f)}
        for msg in ipr.get_addr():
            addr = msg.get_attr("IFA_ADDRESS")
            if addr is None or msg["index"] in overlays or msg["family"] not in routed:
                continue
            ip = ipaddress.ip_address(addr)
            if ip.is_loopback or ip.is_link_local or ip.is_multicast or addr in exclude:
                continue
            out.append(addr)
    return out


def _kind(link) -> str | None:
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


# Addresses, routes and links: any of them may change which locators a node has.
_GROUPS = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE | RTMGRP_LINK
# The messages of one change (an address and its routes) come within a few
# milliseconds: wait that long and act once. Not longer: a handover is
# counted from the kernel's event, and a burst spread wider (a link gone,
# then another one made) is acted on at each of its steps.
BATCH = 0.005


async def network_changes(on_change: Callable[[], None]) -> None:
    """Call `on_change` after every batch of address, route or link
    messages from the kernel (mobility: react to the event, not a timer)."""
    with IPRoute() as ipr:
        ipr.bind(groups=_GROUPS)
        fd = ipr.fileno()
        while True:
            await trio.lowlevel.wait_readable(fd)
            await trio.sleep(BATCH)
            while select.select([fd], [], [], 0)[0]:
                ipr.get()  # drain: what changed is read back from the kernel anyway
            on_change()
