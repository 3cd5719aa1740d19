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


@dataclass(frozen=True)
class Port:
    """One end of a link: an interface in one host, with its addresses.

    Addresses are in CIDR form ("198.51.100.10/24"). An empty tuple is fine:
    an adapter's LAN port, or a DHCP client, has none configured by the lab.
    """

    host: str
    ifname: str  # <= 15 characters (IFNAMSIZ); unique within its host only
    addresses: tuple[str, ...] = ()


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


@dataclass(frozen=True)
class Topology:
    name: str
    domain: str
    hosts: tuple[Host, ...]
    links: tuple[Link, ...] = field(default=())

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
        # Only hosts that enroll get a name in the CYPHONIC domain.
        return f"{host}.{self.domain}" if self.host(host).role == Role.NODE else None

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
    ),
)

TRS_PORT = 7002


def trs_public(topology: Topology, host: str) -> list[str]:
    """ADDRESS:PORT where nodes reach the TRS on `host`: its global addresses."""
    return [f"[{a}]:{TRS_PORT}" if ":" in a else f"{a}:{TRS_PORT}" for a in topology.addresses(host)]


TOPOLOGIES: dict[str, Topology] = {BASIC.name: BASIC}
