"""A lab instance: one topology built under one prefix, with its programs running."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import enrollment, general_nodes, mobility, netns, readiness, rebinding
from .errors import LabError
from .processes import start_daemon, status, tool_env
from .state import LabPaths, check_prefix
from .topology import BASIC, TOPOLOGIES, Role, Topology


@dataclass(frozen=True)
class Program:
    module: str  # python -m <module> --config <file>
    control: str  # its name for `cyphonic status --daemon`


# Which program a role runs. A role not listed here (router, nat, host,
# switch) runs nothing; a general node runs a stock DHCP client (general_nodes.py).
DAEMONS: dict[Role, Program] = {
    Role.CLOUD: Program("cyphonic.cloud", "cloud"),
    Role.TRS: Program("cyphonic.trs", "trs"),
    Role.NODE: Program("cyphonic.node", "node"),
}
# Kept out of DAEMONS, which test_hostile_datagrams floods and checks daemon
# by daemon: it does not send the adapters anything (yet).
PROGRAMS: dict[Role, Program] = {**DAEMONS, Role.ADAPTER: Program("cyphonic.adapter", "adapter")}

DEFAULT_PREFIX = "cyp"
# Which data path the nodes run: TUN offloads + UDP GSO/GRO with the
# compiled per-packet loops, the same on the pure-Python loops, or the plain
# one-packet-per-system-call path (CI runs the system tests on the first
# two, and the data path's on the third).
DATAPLANES = ("offload", "python", "plain")


class Lab:
    def __init__(
        self,
        prefix: str = DEFAULT_PREFIX,
        topology: Topology = BASIC,
        dataplane: str = "offload",
        hole_punching: bool = True,
        cipher: str = "auto",
    ) -> None:
        self.prefix = check_prefix(prefix)
        self.cipher = cipher  # the nodes' and adapters' `cipher` key (CI runs both suites)
        self.topology = topology
        if dataplane not in DATAPLANES:
            raise LabError(f"dataplane must be one of {', '.join(DATAPLANES)}, not {dataplane!r}")
        self.dataplane = dataplane
        self.hole_punching = hole_punching
        self.paths = LabPaths(prefix)
        self.procs: dict[str, subprocess.Popen] = {}

    @classmethod
    def attach(cls, prefix: str = DEFAULT_PREFIX) -> Lab:
        """The lab that `up` built under `prefix`; LabError if there is none."""
        lab = cls(prefix)
        manifest = lab.paths.read_manifest()
        if manifest is None or not netns.list_namespaces(prefix):
            raise LabError(f"no lab is up with prefix {prefix!r} (cyphonic lab up --prefix {prefix})")
        lab.topology = TOPOLOGIES[manifest["topology"]]
        return lab

    # -- names -------------------------------------------------------------

    def ns(self, host: str) -> str:
        self.topology.host(host)  # KeyError for a host that is not in the lab
        return netns.ns_name(self.prefix, host)

    def fqdn(self, host: str) -> str | None:
        return self.topology.fqdn(host)

    # -- lifecycle ---------------------------------------------------------

    def is_up(self) -> bool:
        """True if any namespace of this prefix exists (even a half-built lab)."""
        return bool(netns.list_namespaces(self.prefix))

    def up(self, timeout: float = 20, programs: bool = True) -> None:
        """Build the namespaces, enroll the nodes and adapters, start and wait for the programs.

        Relays and cloud, then nodes and adapters until all are registered
        (`timeout` s for all that), then the general nodes' DHCP clients until
        each has its virtual address on its interface (another `timeout` s).
        `programs=False` builds the bare network only. On failure the lab is
        left as it is, for inspection; `down` removes it.
        """
        if self.is_up():
            raise LabError(
                f"a lab with prefix {self.prefix!r} is already up (cyphonic lab down --prefix {self.prefix})"
            )
        # Stale files from a crashed run would otherwise mix with this one's.
        shutil.rmtree(self.paths.root, ignore_errors=True)
        self.paths.write_manifest(self.topology.name)
        netns.build(self.topology, self.prefix)
        if not programs:
            return
        self.enroll_all()
        deadline = time.monotonic() + timeout
        # The relay first: it needs nothing, and the cloud may announce it.
        for host in self.topology.with_role(Role.TRS) + self.topology.with_role(Role.CLOUD):
            self.start(host.name)
        self.wait_cloud(deadline)
        for role in (Role.NODE, Role.ADAPTER):
            for host in self.topology.with_role(role):
                self.start(host.name)
        self.wait_trs(deadline)
        named = self.topology.with_role(Role.NODE) + self.topology.with_role(Role.ADAPTER)
        self.wait_registered([h.name for h in named], deadline)
        # Only now the devices: an adapter registers each one at its first DHCP message.
        general = [h.name for h in self.topology.with_role(Role.GENERAL)]
        for name in general:
            self.start(name)
        general_nodes.wait_leases(self, general, time.monotonic() + timeout)

    def enroll_all(self) -> None:
        changes: dict[str, object] = {}
        if self.dataplane == "plain":
            changes["offload"] = False
        if self.dataplane == "python":  # the offload path on its pure-Python loops
            changes["packet_loops"] = "python"
        if not self.hole_punching:  # show the relay path on demand
            changes["hole_punching"] = False
        if self.cipher != "auto":
            changes["cipher"] = self.cipher
        enrollment.enroll_lab(self.topology, self.paths, changes)

    def config(self, host: str) -> Path:
        role = self.topology.host(host).role
        if role == Role.CLOUD:
            return self.paths.cloud_config
        if role == Role.TRS:
            return self.paths.trs_config(host)
        if role == Role.ADAPTER:
            return self.paths.adapter_config(host)
        return self.paths.node_config(host)

    def start(self, host: str) -> subprocess.Popen:
        """Start the host's program (again, e.g. after `kill`), logging to <host>.log."""
        if self.topology.host(host).role == Role.GENERAL:
            return general_nodes.start(self, host)
        program = PROGRAMS[self.topology.host(host).role]
        proc = start_daemon(
            self.ns(host), program.module, self.config(host), self.paths.log(host), self.paths.pid(host)
        )
        self.procs[host] = proc
        return proc

    def kill(self, host: str, sig: int = signal.SIGTERM, timeout: float = 5) -> None:
        """Signal the host's program and wait until it is gone."""
        pid = int(self.paths.pid(host).read_text())
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        proc = self.procs.get(host)
        if proc is not None and proc.pid == pid:
            proc.wait(timeout)
            return
        deadline = time.monotonic() + timeout
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def down(self) -> list[str]:
        return down(self.prefix)

    # -- waiting (readiness.py) -----------------------------------------

    def check_alive(self, host: str) -> None:
        """LabError with its log tail if the host's program, started by this Lab, has exited."""
        readiness.check_alive(self, host)

    def wait_cloud(self, deadline: float) -> None:
        readiness.wait_role(self, Role.CLOUD, deadline)

    def wait_trs(self, deadline: float) -> None:
        readiness.wait_role(self, Role.TRS, deadline)

    def wait_registered(self, hosts: list[str], deadline: float) -> None:
        """Until each node says it is registered, and each adapter answers
        `cyphonic status` and the cloud lists its FQDN as registered."""
        readiness.wait_registered(self, hosts, deadline)

    def registered_fqdns(self) -> set[str]:
        """The FQDNs the cloud's NMS holds a live registration for."""
        return readiness.registered_fqdns(self)

    # -- using it ----------------------------------------------------------

    def argv(self, host: str, cmd: list[str]) -> list[str]:
        return netns.in_ns(self.ns(host), cmd)

    def run(
        self, host: str, cmd: list[str], timeout: float = 30, check: bool = False, capture: bool = True, **kw
    ) -> subprocess.CompletedProcess:
        """Run a command inside the host's namespace (text mode unless told otherwise)."""
        kw.setdefault("text", True)
        return subprocess.run(
            self.argv(host, cmd), timeout=timeout, check=check, capture_output=capture, env=tool_env(), **kw
        )

    def popen(self, host: str, cmd: list[str], **kw) -> subprocess.Popen:
        kw.setdefault("env", tool_env())
        return subprocess.Popen(self.argv(host, cmd), **kw)

    def status(self, host: str) -> dict | None:
        program = PROGRAMS.get(self.topology.host(host).role)
        return status(self.ns(host), program.control if program else None)

    # -- general nodes -------------------------------------------------------

    def lease(self, host: str) -> str | None:
        """The address a general node's DHCP client put on its interface (IPv6 for dhclient -6)."""
        return general_nodes.lease(self, host)

    def dhcp_renew(self, host: str, timeout: float = 20) -> str | None:
        """Renew a general node's lease (or get one after a release); its address afterwards."""
        return general_nodes.renew(self, host, timeout)

    def dhcp_release(self, host: str, timeout: float = 20) -> None:
        """Release a general node's lease; its address is gone afterwards."""
        general_nodes.release(self, host, timeout)

    # -- mobility (mobility.py) ---------------------------------------------

    def move(self, host: str, network: str) -> dict:
        """Move the host's uplink to an access network of `topology.networks`,
        or back to its link in the topology with `network="home"`.

        Break-before-make: the uplink (`eth0` for a node) loses its addresses
        and goes down, a new one of the same name is made into the network's
        router with its addresses and default routes, then the old one is
        deleted. Returns what changed: host, from, to (None: its topology link
        that is no access network), home, interface, router, removed,
        addresses, gateway4, gateway6, seconds, and when the host was off the
        network: down_at, up_at (wall clock), outage_ms. ValueError for an
        unknown host or network or one that cannot move; LabError if another
        host is on that network.
        """
        return mobility.move(self, host, network)

    def network(self, host: str) -> str | None:
        """The access network the host is on now (mn starts on `global4a`), or
        None while it is on a topology link that is not one (the adapter at home)."""
        return mobility.current_network(self, host)

    def rebind(self, host: str) -> dict:
        """NAT rebinding on the NAPT router `host`: its mappings are forgotten
        (conntrack flushed) and new ones take other public ports (two ranges,
        alternating). Returns host, ports, previous_ports, forgotten, seconds."""
        return rebinding.rebind(self, host)

    def show(self) -> dict:
        hosts = {}
        moves = mobility.read_moves(self)
        adapters = {h.name: self.status(h.name) for h in self.topology.with_role(Role.ADAPTER)}
        served = {  # MAC -> the adapter's entry for that general node
            g["mac"].lower(): g for st in adapters.values() for g in (st or {}).get("general_nodes", []) if "mac" in g
        }
        for host in self.topology.hosts:
            st = self.status(host.name) if host.role == Role.NODE else adapters.get(host.name)
            ports = self.topology.ports(host.name)
            entry = {
                "netns": self.ns(host.name),
                "role": str(host.role),
                "fqdn": self.fqdn(host.name),
                "vip4": (st or {}).get("vip4"),
                "vip6": (st or {}).get("vip6"),
                "addresses": mobility.current_addresses(self, host.name),
                "network": mobility.current_network(self, host.name, moves),
                # GET /metrics of the host's daemon, reachable from its own namespace
                "metrics": enrollment.METRICS if host.role in PROGRAMS else None,
            }
            if host.role == Role.GENERAL:
                # What its adapter reports, and what its DHCP client configured.
                mac = ports[0].mac if ports else None
                seen = served.get((mac or "").lower(), {})
                entry.update(vip4=seen.get("vip4"), vip6=seen.get("vip6"), mac=mac, dhcp=host.dhcp)
                entry.update(registered=seen.get("registered"), lease=self.lease(host.name))
            hosts[host.name] = entry
        return {"domain": self.topology.domain, "prefix": self.prefix, "hosts": hosts}


def down(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Remove the lab under `prefix`, whatever state it is in; returns the namespaces removed."""
    paths = LabPaths(check_prefix(prefix))
    removed = netns.teardown(prefix)
    # A daemon whose namespace was deleted by hand no longer shows up in
    # `ip netns pids`; its pid file still names it.
    for pidfile in paths.root.glob("*.pid") if paths.root.exists() else []:
        _kill_if_ours(pidfile, paths.root)
    shutil.rmtree(paths.root, ignore_errors=True)
    return removed


def _kill_if_ours(pidfile: Path, root: Path) -> None:
    try:
        pid = int(pidfile.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    # The pid may have been reused since: only kill a program whose command
    # line names this lab's own files (its --config lives under root).
    if f"{root}/".encode() in cmdline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
