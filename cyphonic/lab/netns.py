"""Build and tear down a topology as network namespaces joined by veth pairs.

This calls `ip`, `sysctl` and `nft` rather than netlink: a lab is read and
debugged by people typing those same commands, and every step here can be
replayed by hand from the error message.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .errors import LabError
from .topology import Host, Link, Role, Topology

NETNS_ETC = Path("/etc/netns")
BRIDGE = "br0"  # the one bridge in a SWITCH namespace; every port of the host joins it


def ns_name(prefix: str, host: str) -> str:
    return f"{prefix}-{host}"


def sh(*argv: str, input: str | None = None, timeout: float = 20) -> str:
    """Run one setup command; a failure names the command and its stderr."""
    try:
        done = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LabError(f"timed out: {' '.join(argv)}") from None
    if done.returncode != 0:
        raise LabError(f"failed: {' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def in_ns(ns: str, argv: list[str]) -> list[str]:
    """argv to run inside `ns`; `ip netns exec` also binds /etc/netns/<ns>/*."""
    return ["ip", "netns", "exec", ns, *argv]


def list_namespaces(prefix: str) -> list[str]:
    out = sh("ip", "netns", "list")
    # Lines look like "cyp-mn (id: 3)" or just "cyp-mn".
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return sorted(n for n in names if n.startswith(prefix + "-"))


def build(topology: Topology, prefix: str) -> None:
    for host in topology.hosts:
        _add_host(ns_name(prefix, host.name), host)
    for link in topology.links:
        add_link(prefix, link, topology)
    for host in topology.hosts:
        _add_routes(ns_name(prefix, host.name), host)
        if host.nat:
            _add_napt(ns_name(prefix, host.name), host, topology)


def _add_host(ns: str, host: Host) -> None:
    sh("ip", "netns", "add", ns)
    sysctls = [
        # DAD would hold IPv6 addresses "tentative" for ~2 s after `up`;
        # nothing in a lab can clash, so addresses are usable at once.
        "net.ipv6.conf.all.accept_dad=0",
        "net.ipv6.conf.default.accept_dad=0",
    ]
    if host.role != Role.GENERAL:
        # No one sends router advertisements here; do not wait for them. A
        # general node is a stock device: it takes its adapter's (M=1, O=1).
        sysctls.append("net.ipv6.conf.default.accept_ra=0")
    if host.role == Role.SWITCH:
        # A plain L2 box: no link-local address, no MLD or RS of its own.
        sysctls += ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]
    if host.forwarding:
        sysctls += ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]
    sh(*in_ns(ns, ["sysctl", "-q", "-w", *sysctls]))
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    # Every namespace gets its own resolv.conf so no lookup inside the lab
    # ever goes to the machine's resolver. On a node, 127.0.0.1:53 is the
    # daemon's Resolver Module; elsewhere nothing listens and lookups fail fast.
    etc = NETNS_ETC / ns
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    if host.role == Role.SWITCH:
        # No STP, no forwarding delay, no multicast snooping: every frame
        # (DHCPv6 and RA multicast included) reaches every port at once.
        bridge = ["type", "bridge", "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0"]
        sh("ip", "-n", ns, "link", "add", BRIDGE, *bridge)
        sh("ip", "-n", ns, "link", "set", BRIDGE, "up")


def add_link(prefix: str, link: Link, topology: Topology) -> None:
    a_ns, b_ns = ns_name(prefix, link.a.host), ns_name(prefix, link.b.host)
    # Both ends are created directly in their namespaces: nothing ever
    # appears in the machine's own namespace, so names cannot clash there.
    sh("ip", "link", "add", link.a.ifname, "netns", a_ns, "type", "veth", "peer", "name", link.b.ifname, "netns", b_ns)
    # While still down: a fixed MAC, IPv6 off (no link-local address is ever
    # made), a switch's side into its bridge. Offloads stay at veth's defaults.
    for ns, port in ((a_ns, link.a), (b_ns, link.b)):
        if port.mac:
            sh("ip", "-n", ns, "link", "set", port.ifname, "address", port.mac)
        if not port.ipv6:
            sh(*in_ns(ns, ["sysctl", "-q", "-w", f"net.ipv6.conf.{port.ifname}.disable_ipv6=1"]))
        if topology.host(port.host).role == Role.SWITCH:
            sh("ip", "-n", ns, "link", "set", port.ifname, "master", BRIDGE)
    # Up first, addresses second: an IPv6 address added to a device that is
    # down joins its solicited-node group only later, asynchronously, and the
    # first neighbour solicitation for it went unanswered (1 s stall).
    for ns, port in ((a_ns, link.a), (b_ns, link.b)):
        sh("ip", "-n", ns, "link", "set", port.ifname, "up")
    for ns, port in ((a_ns, link.a), (b_ns, link.b)):
        for cidr in port.addresses:
            extra = ["nodad"] if ipaddress.ip_interface(cidr).version == 6 else []
            sh("ip", "-n", ns, "addr", "add", cidr, "dev", port.ifname, *extra)


def _add_routes(ns: str, host: Host) -> None:
    if host.gateway4:
        sh("ip", "-n", ns, "route", "add", "default", "via", host.gateway4)
    if host.gateway6:
        sh("ip", "-n", ns, "-6", "route", "add", "default", "via", host.gateway6)


def napt_ruleset(host: Host, topology: Topology, ports: tuple[int, int] | None = None) -> str:
    """nftables rules of a NAPT router: masquerade LAN->WAN, drop unsolicited WAN->LAN.

    `ports`: the public source ports new mappings take (`lab rebind`); None
    keeps a LAN host's own port where it is free, as Linux masquerade does.
    """
    assert host.nat is not None
    # Its LAN's addresses: those of the link in the topology, or of the access
    # network a host can move onto behind it (`cyphonic lab move`).
    lan_cidrs = [c for p in topology.ports(host.name) if p.ifname == host.nat.lan for c in p.addresses]
    lan_cidrs += [
        c
        for n in topology.networks
        if (n.router, n.router_ifname) == (host.name, host.nat.lan)
        for c in n.router_addresses
    ]
    lan_nets = sorted(
        {str(ipaddress.ip_interface(c).network) for c in lan_cidrs if ipaddress.ip_interface(c).version == 4}
    )
    saddr = f"ip saddr {{ {', '.join(lan_nets)} }} " if lan_nets else ""
    wan, lan = host.nat.wan, host.nat.lan
    # nft maps ports only after a transport match; ICMP keeps the plain rule.
    ported = ""
    if ports:
        ported = f'        {saddr}oifname "{wan}" meta l4proto {{ tcp, udp }} masquerade to :{ports[0]}-{ports[1]}\n'
    return f"""\
table ip napt {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
{ported}        {saddr}oifname "{wan}" masquerade
    }}
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "{lan}" oifname "{wan}" accept
    }}
}}
"""


def _add_napt(ns: str, host: Host, topology: Topology) -> None:
    sh(*in_ns(ns, ["nft", "-f", "-"]), input=napt_ruleset(host, topology))


def kill_processes(ns: str, grace: float = 3.0) -> None:
    """Stop everything running in `ns`: SIGTERM, then SIGKILL after `grace` s."""
    pids = _pids(ns)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            time.sleep(0.05)
            pids = [p for p in pids if _alive(p)]
        if not pids:
            return


def _pids(ns: str) -> list[int]:
    try:
        out = sh("ip", "netns", "pids", ns)
    except LabError:
        return []
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        # A zombie still "exists" for kill(0); look at its state instead.
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def teardown(prefix: str) -> list[str]:
    """Remove every namespace of the prefix and what lives in it; idempotent."""
    namespaces = list_namespaces(prefix)
    for ns in namespaces:
        kill_processes(ns)
    for ns in namespaces:
        # Deleting a namespace destroys its veth ends, and with them the peers.
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    for etc in NETNS_ETC.glob(f"{prefix}-*"):
        shutil.rmtree(etc, ignore_errors=True)
    return namespaces
