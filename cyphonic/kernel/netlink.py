"""Addresses of this host, read through netlink."""

from __future__ import annotations

import ipaddress
from collections.abc import Set

from pyroute2 import IPRoute

# Interfaces whose addresses are another overlay's (ours, Nebula, WireGuard):
# reporting them as locators would tunnel CYPHONIC through another tunnel.
OVERLAY_KINDS = frozenset({"tun", "wireguard"})


def global_addresses(exclude: Set[str] = frozenset()) -> list[str]:
    """Every global-scope address of this host (IPv4 and IPv6), except the
    overlay's own and those on tunnel interfaces; these are the locators a
    node reports to the NMS."""
    out = []
    with IPRoute() as ipr:
        overlays = {link["index"] for link in ipr.get_links() if _kind(link) in OVERLAY_KINDS}
        for msg in ipr.get_addr():
            addr = msg.get_attr("IFA_ADDRESS")
            if addr is None or msg["index"] in overlays:
                continue
            ip = ipaddress.ip_address(addr)
            if ip.is_loopback or ip.is_link_local or ip.is_multicast or addr in exclude:
                continue
            out.append(addr)
    return out


def _kind(link) -> str | None:
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None
