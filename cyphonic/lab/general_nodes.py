"""General nodes: stock devices behind an adapter that run a DHCP client and nothing of ours.

Each client runs in the foreground as a lab process (so it keeps renewing
its lease while the lab is up) and logs to <host>.log, where the lab's
script adds one line per event ("dhclient-script: BOUND 10.96.0.7/...").
The functions here back Lab.start, Lab.lease, Lab.dhcp_renew and
Lab.dhcp_release for hosts of role GENERAL.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .dhcp_clients import Client, address
from .errors import LabError
from .processes import log_tail, start_program
from .topology import Role

if TYPE_CHECKING:
    from .instance import Lab

# What the lab's scripts log when a lease is (re)applied or given up.
_BOUND = re.compile(r"^(dhclient6?|udhcpc)-script: (BOUND6?|RENEW6?|REBIND6?|REBOOT6?|bound|renew) ", re.M)
_UNBOUND = re.compile(r"^(dhclient6?|udhcpc)-script: (RELEASE6?|EXPIRE6?|STOP6?|deconfig)\b", re.M)


def client(lab: Lab, host: str) -> Client:
    h = lab.topology.host(host)
    if h.role != Role.GENERAL or h.dhcp is None:
        raise LabError(f"{host} is not a general node (it runs no DHCP client)")
    ports = lab.topology.ports(host)
    return Client(h.dhcp, lab.paths.dhcp(host), ports[0].ifname if ports else "eth0")


def start(lab: Lab, host: str) -> subprocess.Popen:
    """Start the host's DHCP client in the foreground (again, after a release or kill)."""
    c = client(lab, host)
    c.write_files(host, lab.ns(host))
    proc = start_program(lab.ns(host), c.run_argv(), lab.paths.log(host), lab.paths.pid(host))
    lab.procs[host] = proc
    return proc


def pid(lab: Lab, host: str) -> int | None:
    """The pid of the host's running DHCP client, if one runs."""
    proc = lab.procs.get(host)
    if proc is not None:
        return proc.pid if proc.poll() is None else None
    try:  # a lab attached to: only the pid file says
        n = int(lab.paths.pid(host).read_text())
        cmdline = Path(f"/proc/{n}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return n if f"{lab.paths.root}/".encode() in cmdline else None


def lease(lab: Lab, host: str) -> str | None:
    """The address the client has configured on its interface: IPv4, or a
    global IPv6 address for dhclient -6; None while it has none."""
    c = client(lab, host)
    done = lab.run(host, ["ip", "-j", "addr", "show", "dev", c.ifname], timeout=10)
    return address(done.stdout, c.family) if done.returncode == 0 else None


def wait_leases(lab: Lab, hosts: list[str], deadline: float) -> None:
    """Until every host has its (virtual) address configured by its client."""
    waiting = list(hosts)
    while waiting:
        for host in list(waiting):
            lab.check_alive(host)
            if lease(lab, host):
                waiting.remove(host)
        if not waiting:
            return
        if time.monotonic() > deadline:
            host = waiting[0]
            raise LabError(
                f"{host}: {client(lab, host).kind} got no address on its interface in time "
                f"(log: {lab.paths.log(host)})",
                log_tail(lab.paths.log(host), 25),
            )
        time.sleep(0.2)


def renew(lab: Lab, host: str, timeout: float = 20) -> str | None:
    """Ask the adapter for the lease again and wait until the client applied the answer.

    udhcpc: SIGUSR1, a DHCPREQUEST in RENEWING state (or a new DISCOVER after
    a release). dhclient has no renew signal: it is stopped with SIGTERM,
    which keeps its address, and started again on the same lease file, so it
    requests that lease (INIT-REBOOT, reason REBOOT; dhclient -6 confirms or
    solicits). A client that is not running (after a release) is started.
    Returns the address on the interface afterwards.
    """
    c = client(lab, host)
    offset = _log_size(lab, host)
    running = pid(lab, host)
    if c.kind == "udhcpc" and running:
        os.kill(running, signal.SIGUSR1)
    else:
        if running:
            lab.kill(host)
        start(lab, host)
    _wait_log(lab, host, offset, _BOUND, "a renewed lease", timeout)
    return lease(lab, host)


def release(lab: Lab, host: str, timeout: float = 20) -> None:
    """Release the lease (DHCPRELEASE / DHCPv6 Release) and drop the address.

    udhcpc: SIGUSR2; it stays running, idle, until a renew. dhclient:
    `dhclient -r` with the same files, which stops the running client and
    releases its lease; `dhcp_renew` starts it again.
    """
    c = client(lab, host)
    if c.kind == "udhcpc":
        running = pid(lab, host)
        if not running:
            raise LabError(f"{host}: udhcpc is not running")
        offset = _log_size(lab, host)
        os.kill(running, signal.SIGUSR2)
        _wait_log(lab, host, offset, _UNBOUND, "the lease released", timeout)
        return
    # It runs the script (RELEASE, RELEASE6) itself before it exits.
    done = lab.run(host, c.release_argv(), timeout=timeout)
    with open(lab.paths.log(host), "a") as log:
        log.write(done.stdout + done.stderr)
    if done.returncode != 0:
        raise LabError(f"{host}: dhclient -r exited with {done.returncode}", log_tail(lab.paths.log(host)))
    proc = lab.procs.get(host)
    if proc is not None:
        proc.wait(timeout)  # the running client, which dhclient -r stopped


def _log_size(lab: Lab, host: str) -> int:
    try:
        return lab.paths.log(host).stat().st_size
    except OSError:
        return 0


def _wait_log(lab: Lab, host: str, offset: int, pattern: re.Pattern, what: str, timeout: float) -> None:
    log = lab.paths.log(host)
    deadline = time.monotonic() + timeout
    while True:
        with open(log, "rb") as f:
            f.seek(offset)
            if pattern.search(f.read().decode(errors="replace")):
                return
        if time.monotonic() > deadline:
            raise LabError(f"{host}: no sign of {what} after {timeout:.0f} s (log: {log})", log_tail(log, 25))
        time.sleep(0.1)
