"""Swapping a host's uplink veth for another one, with as short an outage as the kernel allows.

Deleting a veth takes ~60 ms here (the kernel waits for RCU grace periods
before `ip link del` returns), and making a link with one `ip` call per step
~30 ms more: a move made that way cut the host off for ~90 ms, more than the
overlay's own handover goal, and the bench measured the lab instead. So the
old link is first taken out of service in one `ip -batch` (addresses flushed,
down, renamed out of the way: the host sees the same address and link events
as on a deletion), the new one is made with one batch per namespace, and
only then is the old one deleted. The host is off the network for ~15 ms.
Each batch can still be replayed by hand: the error names its lines.
"""

from __future__ import annotations

import ipaddress
import subprocess

from . import netns
from .errors import LabError
from .topology import Link, Port, Role, Topology

PARKED = "-old"  # suffix of a link taken out of service, until it is deleted
NO_DEVICE = ("Cannot find device",)
NO_ROUTE = ("No such process", "No such file or directory")  # IPv4, IPv6: no such route


def batch(ns: str, lines: list[str], tolerate: tuple[str, ...] = ()) -> None:
    """`ip -n ns -force -batch -`: every line runs; an error that is not in `tolerate` raises."""
    argv = ["ip", "-n", ns, "-force", "-batch", "-"]
    try:
        done = subprocess.run(argv, input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        raise LabError(f"timed out: {' '.join(argv)}: {' / '.join(lines)}") from None
    if done.returncode == 0:
        return
    errors = [e for e in done.stderr.splitlines() if e.strip() and not e.startswith("Command failed")]
    if not errors or any(not any(t in e for t in tolerate) for e in errors):
        raise LabError(f"failed: {' '.join(argv)}: {' / '.join(lines)}: {done.stderr.strip()}")


def park(prefix: str, host: str, ifname: str, router: Port | None) -> str:
    """Take the host's `ifname` out of service at once; returns the name it is parked under.

    `router`: the far end, renamed too when the new link reuses its name (a
    host that moves onto the network it is on).
    """
    parked = f"{ifname[: 15 - len(PARKED)]}{PARKED}"
    # First a link parked by a move that failed half-way (rarely there: tolerated).
    lines = [f"link del {parked}", f"addr flush dev {ifname}", f"link set {ifname} down"]
    batch(netns.ns_name(prefix, host), [*lines, f"link set {ifname} name {parked}"], NO_DEVICE)
    if router is not None:
        far = f"{router.ifname[: 15 - len(PARKED)]}{PARKED}"
        lines = [f"link set {router.ifname} down", f"link set {router.ifname} name {far}"]
        batch(netns.ns_name(prefix, router.host), lines, NO_DEVICE)
    return parked


def make(prefix: str, link: Link, topology: Topology, host: str, gateways: dict[int, str | None]) -> None:
    """The link up and addressed, and the host's default routes through it (`gateways`
    by IP version; None: no default route of that family any more)."""
    mine, far = (link.a, link.b) if link.a.host == host else (link.b, link.a)
    ns, far_ns = netns.ns_name(prefix, host), netns.ns_name(prefix, far.host)
    special = any(p.mac or not p.ipv6 or topology.host(p.host).role == Role.SWITCH for p in (mine, far))
    routes = [f"route replace default via {g} dev {mine.ifname}" for g in gateways.values() if g]
    gone = [f"route del {'0.0.0.0/0' if v == 4 else '::/0'}" for v, g in gateways.items() if not g]
    # `gone`: no default route of that family through any other port either
    if special:  # MACs, IPv6 off, bridge ports: the general way, as `up` does it
        netns.add_link(prefix, link, topology)
        batch(ns, [*routes, *gone], NO_ROUTE)
        return
    # Up first, addresses second, on both ends, as netns.add_link does.
    add = f"link add {mine.ifname} type veth peer name {far.ifname} netns {far_ns}"
    batch(ns, [add, f"link set {mine.ifname} up"])
    batch(far_ns, [f"link set {far.ifname} up", *_addresses(far)])
    batch(ns, [*_addresses(mine), *routes, *gone], NO_ROUTE)


def _addresses(port: Port) -> list[str]:
    return [
        f"addr add {cidr} dev {port.ifname}" + (" nodad" if ipaddress.ip_interface(cidr).version == 6 else "")
        for cidr in port.addresses
    ]


def remove(prefix: str, host: str, parked: str) -> None:
    """Delete the parked link (both ends): the slow part, after the host is back on a network."""
    batch(netns.ns_name(prefix, host), [f"link del {parked}"], NO_DEVICE)
