"""What the reference tunnels (nebula.py, wireguard.py, openvpn.py) share: one process per
lab host, started with `lab.popen` into a log file, and stopped, listed and summed up alike."""

from __future__ import annotations

import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cyphonic.lab import LabError


class Members(ABC):
    """The class sets `self.lab` and `self.procs` (host -> Popen) and says where each member logs."""

    lab: Any
    procs: dict[str, subprocess.Popen]

    @abstractmethod
    def log(self, host: str) -> Path: ...

    @abstractmethod
    def hosts(self) -> Iterable[str]: ...

    def spawn(self, host: str, argv: list[str]) -> None:
        """Start the member on `host` in its namespace, its output appended to its log."""
        with open(self.log(host), "ab") as out:
            self.procs[host] = self.lab.popen(
                host, argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _tails(self, lines: int = 8) -> str:
        """The last lines of every member's log, for a LabError's detail."""
        out = []
        for host in self.hosts():
            try:
                text = self.log(host).read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                text = ["(no log)"]
            out.append(f"--- {host}\n" + "\n".join(text))
        return "\n".join(out)

    def pids(self) -> dict[str, list[int]]:
        # `ip netns exec` (and any sh or env in between) execs the program: the Popen's pid is its own.
        return {h: [p.pid] for h, p in self.procs.items() if p.poll() is None}

    def alive(self) -> bool:
        return bool(self.procs) and all(p.poll() is None for p in self.procs.values())

    def terminate(self, timeout: float = 5) -> None:
        """SIGTERM every member, SIGKILL what is still there after `timeout`."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class PointToPoint(Members):
    """mn and cn, each with one address in the tunnel's own /24 (wireguard.py, openvpn.py)."""

    SUBNET = ""  # "10.98.0": the first three octets
    OCTETS: dict[str, int] = {}  # lab host -> last octet of its address in the tunnel
    STATE = ""  # its directory under the lab's state dir (keys, configs, logs)
    TUN = ""  # its device, the same name in both namespaces

    def __init__(self, lab, directory: Path | None = None) -> None:
        self.lab = lab
        self.dir = directory or lab.paths.root / self.STATE
        self.procs = {}
        self.sockets: dict[str, dict] = {}  # host -> what its UDP socket got (`ss -m`)

    def ip(self, host: str) -> str:
        return f"{self.SUBNET}.{self.OCTETS[host]}"

    def hosts(self) -> list[str]:
        return list(self.OCTETS)

    def log(self, host: str) -> Path:
        return self.dir / f"{host}.log"

    def wait_ping(self, name: str, deadline: float, timeout: float) -> None:
        """Until mn pings cn's address in the tunnel (the tunnel is up end to end)."""
        while self.lab.run("mn", ["ping", "-c", "1", "-W", "1", self.ip("cn")], timeout=10).returncode != 0:
            if time.monotonic() > deadline or not self.alive():
                raise LabError(f"{name}: mn cannot ping {self.ip('cn')} after {timeout:.0f} s", self._tails())
            time.sleep(0.2)

    def stop(self, timeout: float = 5) -> None:
        """SIGTERM (the program closes its tun: the device goes); any device left is deleted."""
        self.terminate(timeout)
        for host in self.procs:
            self.lab.run(host, ["ip", "link", "del", self.TUN], timeout=10)  # normally "Cannot find device"
