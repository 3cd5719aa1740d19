"""NAT rebinding: `cyphonic lab rebind NAT_HOST`, a NAPT router that restarts masquerading.

A home router that reboots, or a carrier NAT that drops idle state, forgets
every mapping, and the next packet of a flow leaves from another public port.
A peer that keeps sending to the old port reaches nothing, and the router drops
it as unsolicited. Here the router's nft table is replaced, in one transaction,
by one whose masquerade takes TCP and UDP ports from the other of two ranges,
then the namespace's conntrack table is flushed (pyroute2, ctnetlink), so
every mapping is gone and a new one cannot get the port it had before. At `up`
masquerade keeps a host's own source port where it is free: 4500 for a node,
32768-60999 for ephemeral sockets, which is in neither range.
"""

from __future__ import annotations

import re
import socket
import time
from typing import TYPE_CHECKING

from . import netns
from .errors import LabError
from .topology import Host, Role, Topology

if TYPE_CHECKING:
    from .instance import Lab

# Alternated on each rebind: a mapping never lands on the port it had just before.
PORT_RANGES = ((10000, 19999), (20000, 29999))


def check(topology: Topology, host: str) -> Host:
    """The NAPT router `host`; ValueError (one line) if it is not one."""
    nats = [h.name for h in topology.with_role(Role.NAT)]
    if host not in nats:
        raise ValueError(f"{host!r} is not a NAPT router (NAPT routers: {', '.join(nats)})")
    return topology.host(host)


def current_ports(lab: Lab, host: str) -> tuple[int, int] | None:
    """The port range the router's masquerade uses now; None: a host's own port where free."""
    rules = netns.sh(*netns.in_ns(lab.ns(host), ["nft", "list", "chain", "ip", "napt", "postrouting"]))
    m = re.search(r"masquerade to :(\d+)-(\d+)", rules)
    return (int(m[1]), int(m[2])) if m else None


def _conntrack_flush(ns: str) -> int:
    """Forget every connection the namespace tracks; how many there were."""
    from pyroute2 import Conntrack  # only a rebind needs it

    # The NAT is IPv4, but a restarted router keeps no IPv6 state either.
    # Count both first: an older kernel's flush ignores the family.
    sockets = [Conntrack(nfgen_family=family, netns=ns) for family in (socket.AF_INET, socket.AF_INET6)]
    try:
        entries = sum(1 for ct in sockets for _ in ct.dump_entries())
        for ct in sockets:
            ct.flush()
    finally:
        for ct in sockets:
            ct.close()
    return entries


def rebind(lab: Lab, host: str) -> dict:
    """Make the NAPT router `host` forget its mappings and map anew from other ports.

    Returns host, ports (the new range), previous_ports (None: the hosts'
    own), forgotten (conntrack entries flushed), seconds.
    """
    nat = check(lab.topology, host)
    ns = lab.ns(host)
    if ns not in netns.list_namespaces(lab.prefix):  # pyroute2 would create it
        raise LabError(f"no namespace {ns}: is the lab up?")
    before = current_ports(lab, host)
    ports = PORT_RANGES[1] if before == PORT_RANGES[0] else PORT_RANGES[0]
    started = time.monotonic()
    # Declaring the table first makes the delete valid whatever state it is in;
    # nft -f applies the whole script atomically, so no packet sees no NAT.
    script = "table ip napt {}\ndelete table ip napt\n" + netns.napt_ruleset(nat, lab.topology, ports)
    netns.sh(*netns.in_ns(ns, ["nft", "-f", "-"]), input=script)
    # After the rules: a packet between the two steps still uses its old mapping.
    forgotten = _conntrack_flush(ns)
    return {
        "host": host,
        "ports": list(ports),
        "previous_ports": list(before) if before else None,
        "forgotten": forgotten,
        "seconds": round(time.monotonic() - started, 3),
    }


def describe(rebound: dict) -> str:
    """One line for a person: what `rebind` changed."""

    def span(ports: list[int] | None) -> str:
        return f"{ports[0]}-{ports[1]}" if ports else "the hosts' own where free"

    return (
        f"rebound {rebound['host']}: forgot {rebound['forgotten']} conntrack entries; new TCP/UDP mappings take ports "
        f"{span(rebound['ports'])} (before: {span(rebound['previous_ports'])}) ({rebound['seconds'] * 1000:.0f} ms)"
    )
