"""Moving a host's uplink to another access network: `cyphonic lab move HOST NETWORK`.

The access networks are data (`Topology.networks` in topology.py). A move is
break-before-make, as a handover is: the host's uplink veth loses its
addresses and goes down (every route through it goes with them), then a new
pair is made between the host and the network's router, up, addressed (IPv6
with nodad, usable at once) and the default routes of the network's families
set through it; the old pair is deleted last (uplink.py: deleting a veth takes
longer than all the rest). The host side keeps its name from the topology
(`eth0` for every node), so `ip -n <prefix>-mn addr show eth0` is always the
current uplink; the router side is the network's `router_ifname`. The host is
off the network for ~15 ms (`outage_ms`), the move takes ~80 ms in all.

`home` takes a host back to its uplink in the topology, whatever that is: for
mn the access network `global4a`, for the adapter (or cn) the link to its NAPT
router's LAN, which is no access network. The link is made again exactly as
`up` made it, with the topology's default routes.

Which host is on which network is kept in networks.json beside lab.json: a
host not listed there is on its topology uplink (mn: `global4a`).
"""

from __future__ import annotations

import ipaddress
import json
import time
from typing import TYPE_CHECKING

from . import uplink
from .errors import LabError
from .topology import AccessNetwork, Link, Port, Role, Topology

if TYPE_CHECKING:
    from .instance import Lab

# Routers, NAPT routers, switches and DHCP-configured devices stay where they are.
FIXED = (Role.ROUTER, Role.NAT, Role.SWITCH, Role.GENERAL)


HOME = "home"  # not a network: the host's own uplink in the topology


def check(topology: Topology, host: str, network: str) -> tuple[Port, AccessNetwork | None]:
    """The host's uplink and the network (None for `home`); ValueError (one line)
    if either cannot be used."""
    names = [h.name for h in topology.hosts]
    if host not in names:
        raise ValueError(f"no host {host!r} in the lab (hosts: {', '.join(names)})")
    net = None
    if network != HOME:
        try:
            net = topology.network(network)
        except KeyError:
            known = ", ".join([n.name for n in topology.networks] + [HOME])
            raise ValueError(f"no access network {network!r} (networks: {known})") from None
    uplink = topology.uplink(host)
    if topology.host(host).role in FIXED or uplink is None or (net is not None and net.router == host):
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
    moved host's uplink has its network's; the far end of a moved host's
    topology link is gone with it (inet's `mn` port, nat-ad's `lan`), and a
    router has the addresses of the networks someone is on."""
    topo = lab.topology
    moves = read_moves(lab)
    # Every topology link whose host is away was deleted, both ends.
    gone: set[tuple[str, str]] = set()
    for name in moves:
        up = topo.uplink(name)
        far = topo.peer(name, up.ifname) if up else None
        if up is not None and far is not None:
            gone |= {(name, up.ifname), (far.host, far.ifname)}
    cidrs = list(topo.network(moves[host]).host_addresses) if host in moves else []
    cidrs += [c for p in topo.ports(host) if (host, p.ifname) not in gone for c in p.addresses]
    kept = {(p.host, p.ifname) for p in topo.ports(host)} - gone
    for net in topo.networks:
        if net.router == host and net.name in moves.values() and (host, net.router_ifname) not in kept:
            cidrs += net.router_addresses
    return [c.split("/")[0] for c in cidrs]


def move(lab: Lab, host: str, network: str) -> dict:
    """Move `host`'s uplink onto `network`, or back to its topology link (`home`);
    returns what changed (see `describe`)."""
    topo = lab.topology
    port, net = check(topo, host, network)
    home_net = topo.home_network(host)
    if net is None:
        net = home_net  # mn's home is an access network; the adapter's is not
    going_home = net is None or net == home_net
    moves = read_moves(lab)
    previous = current_network(lab, host, moves)
    for other in topo.hosts:
        if net and other.name != host and current_network(lab, other.name, moves) == net.name:
            raise LabError(f"access network {net.name!r} is in use by {other.name!r}; move it elsewhere first")
    ifname = port.ifname
    if host in moves:
        old = topo.network(moves[host])
        was = Port(old.router, old.router_ifname)
    else:
        was = topo.peer(host, ifname) or Port("-", "-")
    if going_home:
        # Exactly the link `up` made, and the topology's default routes.
        link = next(lk for lk in topo.links if port in (lk.a, lk.b))
        me = topo.host(host)
        gateways = {4: me.gateway4, 6: me.gateway6}
    else:
        assert net is not None
        link = Link(Port(host, ifname, net.host_addresses), Port(net.router, net.router_ifname, net.router_addresses))
        gateways = {4: net.gateway(4), 6: net.gateway(6)}
    mine, router = (link.a, link.b) if link.a.host == host else (link.b, link.a)
    clash = (was.host, was.ifname) == (router.host, router.ifname)  # the same network again
    started = time.monotonic()
    down_at = time.time()
    parked = uplink.park(lab.prefix, host, ifname, was if clash else None)  # break
    uplink.make(lab.prefix, link, topo, host, gateways)  # make
    up_at = time.time()
    uplink.remove(lab.prefix, host, parked)
    seconds = time.monotonic() - started
    if going_home:
        moves.pop(host, None)  # not listed = on its topology uplink
    else:
        assert net is not None
        moves[host] = net.name
    lab.paths.networks.write_text(json.dumps(moves, sort_keys=True) + "\n")
    return {
        "host": host,
        "from": previous,
        "to": net.name if net else None,
        "home": going_home,
        "interface": ifname,
        "router": f"{router.host}:{router.ifname}",
        "removed": f"{was.host}:{was.ifname}",
        "addresses": list(mine.addresses),
        "gateway4": gateways[4],
        "gateway6": gateways[6],
        "seconds": round(seconds, 3),
        # wall clock: the old link went out of service, the new one had its routes
        "down_at": down_at,
        "up_at": up_at,
        "outage_ms": round((up_at - down_at) * 1000, 1),
    }


def describe(moved: dict) -> str:
    """One line for a person: what `move` changed."""
    routes = [f"default via {g}" for g in (moved["gateway4"], moved["gateway6"]) if g]
    families = {ipaddress.ip_interface(a).version for a in moved["addresses"]}
    lost = [f"no IPv{v}" for v in (4, 6) if v not in families]
    return (
        f"moved {moved['host']}: {moved['from'] or 'its topology link'} -> {moved['to'] or 'its topology link'}"
        f"{' (home)' if moved.get('home') else ''}: "
        f"{moved['interface']} <-> {moved['router']} {' '.join(moved['addresses'])}, "
        f"{', '.join(routes + lost)}; removed the link to {moved['removed']} "
        f"(off the network {moved['outage_ms']:.0f} ms, {moved['seconds'] * 1000:.0f} ms in all)"
    )
