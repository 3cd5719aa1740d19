"""Addresses of this host, read through netlink."""

from __future__ import annotations

import ipaddress

from pyroute2 import IPRoute


def global_addresses(exclude: set[str] = frozenset()) -> list[str]:
    """Every global-scope address of this host (IPv4 and IPv6), except the
    overlay's own; these are the locators a node reports to the NMS."""
    out = []
    with IPRoute() as ipr:
        for msg in ipr.get_addr():
            addr = msg.get_attr("IFA_ADDRESS")
            if addr is None:
                continue
            ip = ipaddress.ip_address(addr)
            if ip.is_loopback or ip.is_link_local or ip.is_multicast or addr in exclude:
                continue
            out.append(addr)
    return out
