"""Moving a host's uplink to another access network: `cyphonic lab move HOST NETWORK`.

The access networks are data (`Topology.networks` in topology.py). A move is
break-before-make, as a handover is: the host's uplink veth is deleted (its
router end and every route through it go with it), then a new pair is made
between the host and the network's router, up, addressed (IPv6 with nodad,
usable at once) and the default routes of the network's families set through
it. The host side keeps its name from the topology (`eth0` for every node), so
`ip -n <prefix>-mn addr show eth0` is always the current uplink; the router
side is the network's `router_ifname`. A move takes a few tens of milliseconds.

Which host is on which network is kept in networks.json beside lab.json: a
host not listed there is on its topology uplink (mn: `global4a`).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from typing import TYPE_CHECKING

from . import netns
from .errors import LabError
from .topology import AccessNetwork, Link, Port, Role, Topology

if TYPE_CHECKING:
    from .instance import Lab

# Routers, NAPT routers, switches and DHCP-configured devices stay where they are.
FIXED = (Role.ROUTER, Role.NAT, Role.SWITCH, Role.GENERAL)


def check(topology: Topology, host: str, network: str) -> tuple[Port, AccessNetwork]:
    """The host's uplink and the network; ValueError (one line) if either cannot be used."""
    names = [h.name for h in topology.hosts]
    if host not in names:
        raise ValueError(f"no host {host!r} in the lab (hosts: {', '.join(names)})")
    try:
        net = topology.network(network)
    except KeyError:
        known = ", ".join(n.name for n in topology.networks) or "none"
        raise ValueError(f"no access network {network!r} (networks: {known})") from None
    uplink = topology.uplink(host)
    if topology.host(host).role in FIXED or uplink is None or net.router == host:
        movable = ", ".join(h.name for h in topology.hosts if movable_host(topology, h.name))
        raise ValueError(f"host {host!r} cannot move (hosts that can: {movable})")
    return uplink, net


def movable_host(topology: Topology, host: str) -> bool:
    return topology.host(host).role not in FIXED and topology.uplink(host) is not None


def read_moves(lab: Lab) -> dict[str, str]:
    try:
        return json.loads(lab.paths.networks.read_text())
    except (OSError, ValueError):
        return {}


def current_network(lab: Lab, host: str, moves: dict[str, str] | None = None) -> str | None:
    """The access network the host is on now; None for a host still on a topology
    link that is not one (cn behind nat-cn), or that cannot move."""
    moves = read_moves(lab) if moves is None else moves
    if host in moves:
        return moves[host]
    home = lab.topology.home_network(host)
    return home.name if home else None


def current_addresses(lab: Lab, host: str) -> list[str]:
    """The host's addresses (no prefix length) as they are after any moves: a
    moved host's uplink has its network's, a router has those of the networks
    someone is on (and not those of a home network whose host left)."""
    topo = lab.topology
    moves = read_moves(lab)
    uplink = topo.uplink(host) if host in moves else None
    cidrs = [c for p in topo.ports(host) for c in (p.addresses if p is not uplink else ())]
    if host in moves:
        cidrs[:0] = topo.network(moves[host]).host_addresses
    for net in topo.networks:
        if net.router != host:
            continue
        home = topo.peer(host, net.router_ifname) is not None
        used = any(current_network(lab, h.name, moves) == net.name for h in topo.hosts)
        if home and not used:
            cidrs = [c for c in cidrs if c not in net.router_addresses]
        elif used and not home:
            cidrs += net.router_addresses
    return [c.split("/")[0] for c in cidrs]


def move(lab: Lab, host: str, network: str) -> dict:
    """Move `host`'s uplink onto `network`; returns what changed (see `describe`)."""
    topo = lab.topology
    uplink, net = check(topo, host, network)
    moves = read_moves(lab)
    previous = current_network(lab, host, moves)
    for other in topo.hosts:
        if other.name != host and current_network(lab, other.name, moves) == net.name:
            raise LabError(f"access network {net.name!r} is in use by {other.name!r}; move it elsewhere first")
    ns = lab.ns(host)
    ifname = uplink.ifname
    if previous is not None:
        old = topo.network(previous)
        removed = f"{old.router}:{old.router_ifname}"
    else:
        peer = topo.peer(host, ifname)
        removed = f"{peer.host}:{peer.ifname}" if peer else "-"
    started = time.monotonic()
    # Break: the veth and its peer go together, and with them every route through it.
    gone = subprocess.run(["ip", "-n", ns, "link", "del", ifname], capture_output=True, text=True)
    if gone.returncode != 0 and "Cannot find device" not in gone.stderr:
        raise LabError(f"failed: ip -n {ns} link del {ifname}: {gone.stderr.strip()}")
    # Make: the same as `up` makes a link (up first, then nodad addresses).
    link = Link(Port(host, ifname, net.host_addresses), Port(net.router, net.router_ifname, net.router_addresses))
    netns.add_link(lab.prefix, link, topo)
    gateways = {4: net.gateway(4), 6: net.gateway(6)}
    for version, gateway in gateways.items():
        if gateway:
            netns.sh("ip", "-n", ns, f"-{version}", "route", "replace", "default", "via", gateway, "dev", ifname)
        else:  # none through any other port either: this family is gone
            subprocess.run(["ip", "-n", ns, f"-{version}", "route", "del", "default"], capture_output=True)
    seconds = time.monotonic() - started
    moves[host] = net.name
    lab.paths.networks.write_text(json.dumps(moves, sort_keys=True) + "\n")
    return {
        "host": host,
        "from": previous,
        "to": net.name,
        "interface": ifname,
        "router": f"{net.router}:{net.router_ifname}",
        "removed": removed,
        "addresses": list(net.host_addresses),
        "gateway4": gateways[4],
        "gateway6": gateways[6],
        "seconds": round(seconds, 3),
    }


def describe(moved: dict) -> str:
    """One line for a person: what `move` changed."""
    routes = [f"default via {g}" for g in (moved["gateway4"], moved["gateway6"]) if g]
    families = {ipaddress.ip_interface(a).version for a in moved["addresses"]}
    lost = [f"no IPv{v}" for v in (4, 6) if v not in families]
    return (
        f"moved {moved['host']}: {moved['from'] or 'its topology link'} -> {moved['to']}: "
        f"{moved['interface']} <-> {moved['router']} {' '.join(moved['addresses'])}, "
        f"{', '.join(routes + lost)}; removed the link to {moved['removed']} ({moved['seconds'] * 1000:.0f} ms)"
    )
