"""Declarative description of a lab: hosts, the links between them, addresses.

A topology is data only. `netns.py` turns it into namespaces, `instance.py`
starts the programs its roles call for. A new host (a TRS, a second NAPT site,
an IPv6-only node...) is a new `Host` plus the `Link`s that attach it, not new
code, as long as its role is one the lab already knows how to run.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    """What a host is for; decides which program (if any) runs in it."""

    ROUTER = "router"  # plain forwarding, the "internet"
    NAT = "nat"  # NAPT router in front of a private site
    CLOUD = "cloud"  # python -m cyphonic.cloud (AS + NMS)
    TRS = "trs"  # python -m cyphonic.trs (Tunnel Relay Service)
    NODE = "node"  # python -m cyphonic.node
    HOST = "host"  # a plain host on the internet: runs no CYPHONIC program
    ADAPTER = "adapter"  # python -m cyphonic.adapter: serves general nodes on its LAN port
    SWITCH = "switch"  # a Linux bridge over all its ports: plain L2, runs nothing
    GENERAL = "general"  # a stock device behind an adapter: runs only a stock DHCP client


# The stock DHCP clients a general node can run (Debian's isc-dhcp-client, busybox).
DHCP_CLIENTS = ("dhclient", "udhcpc", "dhclient6")


@dataclass(frozen=True)
class Port:
    """One end of a link: an interface in one host, with its addresses.

    Addresses are in CIDR form ("198.51.100.10/24"). An empty tuple is fine:
    an adapter's LAN port, or a DHCP client, has none configured by the lab.
    """

    host: str
    ifname: str  # <= 15 characters (IFNAMSIZ); unique within its host only
    addresses: tuple[str, ...] = ()
    mac: str | None = None  # fixed MAC (general nodes are enrolled by MAC); None = random
    ipv6: bool = True  # False: net.ipv6.conf.<ifname>.disable_ipv6=1, set before it comes up


@dataclass(frozen=True)
class Link:
    """A veth pair between two hosts."""

    a: Port
    b: Port


@dataclass(frozen=True)
class Nat:
    """NAPT: masquerade whatever comes in on `lan` and leaves through `wan`."""

    wan: str
    lan: str


@dataclass(frozen=True)
class Host:
    name: str
    role: Role
    gateway4: str | None = None  # default route; None = no IPv4 beyond the links
    gateway6: str | None = None
    forwarding: bool = False
    nat: Nat | None = None
    lan: str | None = None  # ADAPTER: its LAN port (no addresses; the daemon opens it raw)
    dhcp: str | None = None  # GENERAL: which stock client it runs, one of DHCP_CLIENTS
    ipv6: bool = False  # GENERAL: enrolled with IPv6 (its adapter serves it DHCPv6)


@dataclass(frozen=True)
class AccessNetwork:
    """A site a host can move its uplink to (`cyphonic lab move HOST NETWORK`).

    It is one veth pair, made when a host moves in: `router_ifname` with
    `router_addresses` in the router, the host's uplink with `host_addresses`
    in the host. The host's default routes go to the router's addresses. One
    host at a time: the host addresses are fixed. A network whose router port
    is already a link in the topology (`global4a`) is that link's host's home.
    """

    name: str
    router: str
    router_ifname: str  # the router's side; a NAT's LAN network must use its `nat.lan`
    router_addresses: tuple[str, ...]
    host_addresses: tuple[str, ...]
    description: str  # one line, for `cyphonic lab move --help`

    def gateway(self, version: int) -> str | None:
        for cidr in self.router_addresses:
            iface = ipaddress.ip_interface(cidr)
            if iface.version == version:
                return str(iface.ip)
        return None


@dataclass(frozen=True)
class Topology:
    name: str
    domain: str
    hosts: tuple[Host, ...]
    links: tuple[Link, ...] = field(default=())
    networks: tuple[AccessNetwork, ...] = field(default=())

    def __post_init__(self) -> None:
        names = [h.name for h in self.hosts]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate host names in topology {self.name}")
        for link in self.links:
            for port in (link.a, link.b):
                if port.host not in names:
                    raise ValueError(f"link to unknown host {port.host!r}")
                if len(port.ifname) > 15:
                    raise ValueError(f"interface name too long: {port.ifname!r}")
        for h in self.hosts:
            if h.role == Role.GENERAL and h.dhcp not in DHCP_CLIENTS:
                raise ValueError(f"{h.name}: dhcp client must be one of {', '.join(DHCP_CLIENTS)}")
            if h.role == Role.ADAPTER and h.lan not in [p.ifname for p in self.ports(h.name)]:
                raise ValueError(f"{h.name}: adapter without a LAN port {h.lan!r}")
        if len({n.name for n in self.networks}) != len(self.networks):
            raise ValueError(f"duplicate network names in topology {self.name}")
        for net in self.networks:
            if net.router not in names or len(net.router_ifname) > 15:
                raise ValueError(f"network {net.name}: unknown router {net.router!r} or bad interface name")
            home = self.peer(net.router, net.router_ifname)
            if home is not None and (home.addresses, self.port(net.router, net.router_ifname).addresses) != (
                net.host_addresses,
                net.router_addresses,
            ):
                raise ValueError(f"network {net.name}: addresses differ from its link in the topology")

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def with_role(self, role: Role) -> list[Host]:
        return [h for h in self.hosts if h.role == role]

    def ports(self, host: str) -> list[Port]:
        return [p for link in self.links for p in (link.a, link.b) if p.host == host]

    def addresses(self, host: str) -> list[str]:
        """The host's configured addresses, without prefix length."""
        return [cidr.split("/")[0] for p in self.ports(host) for cidr in p.addresses]

    def fqdn(self, host: str) -> str | None:
        # Only hosts that enroll get a name in the CYPHONIC domain; a general
        # node is enrolled by its adapter.
        return f"{host}.{self.domain}" if self.host(host).role in NAMED else None

    def port(self, host: str, ifname: str) -> Port:
        for p in self.ports(host):
            if p.ifname == ifname:
                return p
        raise KeyError(f"{host}:{ifname}")

    def network(self, name: str) -> AccessNetwork:
        for n in self.networks:
            if n.name == name:
                return n
        raise KeyError(name)

    def uplink(self, host: str) -> Port | None:
        """The host's port towards its default gateway (either family), if it has one."""
        me = self.host(host)
        gateways = [ipaddress.ip_address(g) for g in (me.gateway4, me.gateway6) if g]
        for p in self.ports(host):
            for cidr in p.addresses:
                if any(g in ipaddress.ip_interface(cidr).network for g in gateways):
                    return p
        return None

    def home_network(self, host: str) -> AccessNetwork | None:
        """The access network that the host's uplink in the topology is (mn: `global4a`)."""
        up = self.uplink(host)
        other = self.peer(host, up.ifname) if up else None
        for n in self.networks:
            if other is not None and (n.router, n.router_ifname) == (other.host, other.ifname):
                return n
        return None

    def peer(self, host: str, ifname: str) -> Port | None:
        """The other end of the link on `host`'s `ifname`."""
        for link in self.links:
            for mine, other in ((link.a, link.b), (link.b, link.a)):
                if mine.host == host and mine.ifname == ifname:
                    return other
        return None

    def general_nodes(self, adapter: str) -> list[tuple[Host, Port]]:
        """The general nodes on the adapter's LAN and the port each has there,
        found through any switches in between, in topology order."""
        lan = self.host(adapter).lan
        first = self.peer(adapter, lan) if lan else None
        todo: list[Port] = [first] if first else []
        seen: set[str] = set()
        found: dict[str, tuple[Host, Port]] = {}
        while todo:
            port = todo.pop()
            if port.host in seen:
                continue
            seen.add(port.host)
            host = self.host(port.host)
            if host.role == Role.GENERAL:
                found[host.name] = (host, port)
            elif host.role == Role.SWITCH:
                todo += [p for p in (self.peer(host.name, q.ifname) for q in self.ports(host.name)) if p]
        return [found[h.name] for h in self.hosts if h.name in found]

    def cloud_addresses_for(self, host: str) -> list[str]:
        """The cloud addresses a node can reach: those of the families it routes.

        A node is enrolled with exactly these, so an IPv4-only node behind a
        NAPT is never told about an IPv6 cloud address it cannot use.
        """
        me = self.host(host)
        families = {4} if me.gateway4 else set()
        if me.gateway6:
            families.add(6)
        clouds = self.with_role(Role.CLOUD)
        if not clouds:
            return []
        return [a for a in self.addresses(clouds[0].name) if ipaddress.ip_address(a).version in families]


NAMED = (Role.NODE, Role.ADAPTER, Role.GENERAL)


def _link(a: str, a_if: str, a_addrs: tuple[str, ...], b: str, b_if: str, b_addrs: tuple[str, ...]) -> Link:
    return Link(Port(a, a_if, a_addrs), Port(b, b_if, b_addrs))


# The router side of each link is named after the host it leads to, so
# `ip -n cyp-inet link` reads as a list of neighbours.
BASIC = Topology(
    name="basic",
    domain="cyphonic.test",
    hosts=(
        Host("inet", Role.ROUTER, forwarding=True),
        Host("cloud", Role.CLOUD, gateway4="203.0.113.1", gateway6="2001:db8:c::1"),
        Host("mn", Role.NODE, gateway4="198.51.100.1", gateway6="2001:db8:a::1"),
        Host("nat-cn", Role.NAT, gateway4="192.0.2.1", forwarding=True, nat=Nat(wan="wan", lan="lan")),
        Host("cn", Role.NODE, gateway4="192.168.20.1"),
        # The Tunnel Relay Service: dual-stack, global, on its own segment.
        Host("trs", Role.TRS, gateway4="203.0.114.1", gateway6="2001:db8:d::1"),
        # A second relay: the NMS moves new sessions to it when `trs` dies.
        Host("trs2", Role.TRS, gateway4="203.0.115.1", gateway6="2001:db8:f::1"),
        # Two more IPv4-only NAPT sites, one node behind each: a1 and b1 (and
        # cn) can only reach one another through the relay.
        Host("nat-a", Role.NAT, gateway4="198.18.1.1", forwarding=True, nat=Nat(wan="wan", lan="lan")),
        Host("a1", Role.NODE, gateway4="192.168.30.1"),
        Host("nat-b", Role.NAT, gateway4="198.18.2.1", forwarding=True, nat=Nat(wan="wan", lan="lan")),
        Host("b1", Role.NODE, gateway4="192.168.40.1"),
        # An IPv6-only site: a global IPv6 address, no IPv4 beyond loopback.
        Host("v6", Role.NODE, gateway6="2001:db8:e::1"),
        # A foreign host on the internet, dual-stack, with no certificate and
        # no CYPHONIC program: the system tests send hostile datagrams from it.
        Host("attacker", Role.HOST, gateway4="198.18.99.1", gateway6="2001:db8:99::1"),
        # An adapter behind an IPv4-only NAPT, with three stock devices on a
        # switch behind it; a second one with a device straight on its LAN
        # port. The devices run a DHCP client and nothing else of ours.
        Host("nat-ad", Role.NAT, gateway4="198.18.3.1", forwarding=True, nat=Nat(wan="wan", lan="lan")),
        Host("adapter", Role.ADAPTER, gateway4="192.168.50.1", lan="lan0"),
        Host("sw1", Role.SWITCH),
        Host("gn1", Role.GENERAL, dhcp="dhclient"),
        Host("gn2", Role.GENERAL, dhcp="udhcpc"),
        Host("gn6", Role.GENERAL, dhcp="dhclient6", ipv6=True),
        Host("nat-ad2", Role.NAT, gateway4="198.18.4.1", forwarding=True, nat=Nat(wan="wan", lan="lan")),
        Host("adapter2", Role.ADAPTER, gateway4="192.168.60.1", lan="lan0"),
        Host("gn3", Role.GENERAL, dhcp="dhclient"),
        # The NAPT router of the `napt` access network: no one behind it
        # until a host moves there (`cyphonic lab move mn napt`).
        Host("nat-mv", Role.NAT, gateway4="198.18.5.1", forwarding=True, nat=Nat(wan="wan", lan="lan")),
    ),
    links=(
        _link(
            "inet",
            "cloud",
            ("203.0.113.1/24", "2001:db8:c::1/64"),
            "cloud",
            "eth0",
            ("203.0.113.10/24", "2001:db8:c::10/64"),
        ),
        _link(
            "inet",
            "mn",
            ("198.51.100.1/24", "2001:db8:a::1/64"),
            "mn",
            "eth0",
            ("198.51.100.10/24", "2001:db8:a::10/64"),
        ),
        # The NAPT site is IPv4 only, as most home and office NATs are.
        _link("inet", "nat-cn", ("192.0.2.1/24",), "nat-cn", "wan", ("192.0.2.10/24",)),
        _link("nat-cn", "lan", ("192.168.20.1/24",), "cn", "eth0", ("192.168.20.10/24",)),
        _link(
            "inet",
            "trs",
            ("203.0.114.1/24", "2001:db8:d::1/64"),
            "trs",
            "eth0",
            ("203.0.114.20/24", "2001:db8:d::20/64"),
        ),
        _link(
            "inet",
            "trs2",
            ("203.0.115.1/24", "2001:db8:f::1/64"),
            "trs2",
            "eth0",
            ("203.0.115.20/24", "2001:db8:f::20/64"),
        ),
        _link("inet", "nat-a", ("198.18.1.1/24",), "nat-a", "wan", ("198.18.1.10/24",)),
        _link("nat-a", "lan", ("192.168.30.1/24",), "a1", "eth0", ("192.168.30.10/24",)),
        _link("inet", "nat-b", ("198.18.2.1/24",), "nat-b", "wan", ("198.18.2.10/24",)),
        _link("nat-b", "lan", ("192.168.40.1/24",), "b1", "eth0", ("192.168.40.10/24",)),
        _link("inet", "v6", ("2001:db8:e::1/64",), "v6", "eth0", ("2001:db8:e::10/64",)),
        _link(
            "inet",
            "attacker",
            ("198.18.99.1/24", "2001:db8:99::1/64"),
            "attacker",
            "eth0",
            ("198.18.99.66/24", "2001:db8:99::66/64"),
        ),
        _link("inet", "nat-ad", ("198.18.3.1/24",), "nat-ad", "wan", ("198.18.3.10/24",)),
        _link("nat-ad", "lan", ("192.168.50.1/24",), "adapter", "eth0", ("192.168.50.10/24",)),
        # The adapter's LAN port: no address of either family in the kernel.
        Link(Port("adapter", "lan0", ipv6=False), Port("sw1", "adapter")),
        Link(Port("sw1", "gn1"), Port("gn1", "eth0", mac="02:00:5e:10:00:01")),
        Link(Port("sw1", "gn2"), Port("gn2", "eth0", mac="02:00:5e:10:00:02")),
        Link(Port("sw1", "gn6"), Port("gn6", "eth0", mac="02:00:5e:10:00:06")),
        _link("inet", "nat-ad2", ("198.18.4.1/24",), "nat-ad2", "wan", ("198.18.4.10/24",)),
        _link("nat-ad2", "lan", ("192.168.60.1/24",), "adapter2", "eth0", ("192.168.60.10/24",)),
        Link(Port("adapter2", "lan0", ipv6=False), Port("gn3", "eth0", mac="02:00:5e:10:00:03")),
        _link("inet", "nat-mv", ("198.18.5.1/24",), "nat-mv", "wan", ("198.18.5.10/24",)),
    ),
    # Where `cyphonic lab move HOST NETWORK` can take a host (mobility tests).
    networks=(
        AccessNetwork(
            "global4a",
            "inet",
            "mn",  # the topology's own mn link: mn's home
            ("198.51.100.1/24", "2001:db8:a::1/64"),
            ("198.51.100.10/24", "2001:db8:a::10/64"),
            "mn's home: global dual-stack, 198.51.100.10/24 + 2001:db8:a::10/64 on inet",
        ),
        AccessNetwork(
            "global4b",
            "inet",
            "global4b",
            ("198.51.101.1/24",),
            ("198.51.101.10/24",),
            "a second global IPv4 site, IPv4 only: 198.51.101.10/24 on inet",
        ),
        AccessNetwork(
            "napt",
            "nat-mv",
            "lan",
            ("192.168.70.1/24",),
            ("192.168.70.10/24",),
            "behind NAPT router nat-mv (WAN 198.18.5.10), IPv4 only: 192.168.70.10/24",
        ),
        AccessNetwork(
            "ipv6only",
            "inet",
            "ipv6only",
            ("2001:db8:b::1/64",),
            ("2001:db8:b::10/64",),
            "an IPv6-only site, no IPv4: 2001:db8:b::10/64 on inet",
        ),
    ),
)

TRS_PORT = 7002


def trs_public(topology: Topology, host: str) -> list[str]:
    """ADDRESS:PORT where nodes reach the TRS on `host`: its global addresses."""
    return [f"[{a}]:{TRS_PORT}" if ":" in a else f"{a}:{TRS_PORT}" for a in topology.addresses(host)]


TOPOLOGIES: dict[str, Topology] = {BASIC.name: BASIC}
