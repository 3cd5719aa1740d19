"""Nebula (Debian's `nebula` package) in the lab's namespaces, as the reference tunnel.

A CA of its own (nebula-cert, in a directory under the lab's state dir, which
`cyphonic.lab.down` removes), a lighthouse in `cloud` (203.0.113.10), hosts in
`mn` and `cn` (cn is behind the NAPT router: Nebula learns cn's mapped address
from the lighthouse and punches). Nothing here is committed but this code:
keys and configs live only in the lab's state dir.

Settings that differ from Nebula's defaults, and why:
- tun.mtu 1400 (default 1300): the same inner MTU as CYPHONIC's cyph0.
- listen.read_buffer / write_buffer 4 MiB: the same socket buffers as the
  CYPHONIC node (SOCKET_BUFFER in cyphonic/node/daemon.py). With the kernel
  default (208 KiB) Nebula's receiving socket overflows under TCP here
  (RcvbufErrors, ~0.3 Gbit/s), which would measure the buffer, not Nebula.
- local_allow_list / remote_allow_list deny the CYPHONIC overlay (10.96/16,
  fd7c:1f00::/64) and Nebula's own subnet: otherwise Nebula advertises
  cyph0's addresses as underlay candidates and may run inside CYPHONIC.
Everything else (cipher aes, routines 1, tun tx_queue 500, punchy) is default.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

from cyphonic.lab import Lab, LabError

PORT = 4242
SUBNET = "10.99.0"  # /24; clashes neither with 10.96.0.0/16 nor with the lab's links
TUN = "neb0"
MTU = 1400
SOCKET_BUFFER = 4 << 20
LIGHTHOUSE_HOST = "cloud"
LIGHTHOUSE_UNDERLAY = "203.0.113.10"
# lab host -> (certificate name, last octet of the Nebula address)
MEMBERS = {"cloud": ("lighthouse", 1), "mn": ("mn", 2), "cn": ("cn", 3)}
DENY = {"10.96.0.0/16": False, "fd7c:1f00::/64": False, f"{SUBNET}.0/24": False}


def version() -> str | None:
    if not shutil.which("nebula"):
        return None
    out = subprocess.run(["nebula", "-version"], capture_output=True, text=True).stdout
    return out.strip().removeprefix("Version: ") or None


class Nebula:
    def __init__(self, lab: Lab, directory: Path | None = None) -> None:
        self.lab = lab
        self.dir = directory or lab.paths.root / "nebula"
        self.procs: dict[str, subprocess.Popen] = {}

    def ip(self, host: str) -> str:
        return f"{SUBNET}.{MEMBERS[host][1]}"

    def log(self, host: str) -> Path:
        return self.dir / f"{MEMBERS[host][0]}.log"

    # -- files ----------------------------------------------------------------

    def _cert(self, *args: str) -> None:
        done = subprocess.run(["nebula-cert", *args], capture_output=True, text=True, cwd=self.dir, timeout=30)
        if done.returncode != 0:
            raise LabError(f"nebula-cert {args[0]} failed: {done.stderr.strip() or done.stdout.strip()}")

    def config(self, host: str) -> dict:
        name, _ = MEMBERS[host]
        lighthouse = host == LIGHTHOUSE_HOST
        any_rule = [{"port": "any", "proto": "any", "host": "any"}]
        return {
            "pki": {
                "ca": str(self.dir / "ca.crt"),
                "cert": str(self.dir / f"{name}.crt"),
                "key": str(self.dir / f"{name}.key"),
            },
            "static_host_map": {} if lighthouse else {self.ip(LIGHTHOUSE_HOST): [f"{LIGHTHOUSE_UNDERLAY}:{PORT}"]},
            "lighthouse": {
                "am_lighthouse": lighthouse,
                "interval": 60,
                "hosts": [] if lighthouse else [self.ip(LIGHTHOUSE_HOST)],
                "local_allow_list": {**DENY, "interfaces": {"cyph.*": False, "neb.*": False}},
                "remote_allow_list": dict(DENY),
            },
            "listen": {"host": "0.0.0.0", "port": PORT, "read_buffer": SOCKET_BUFFER, "write_buffer": SOCKET_BUFFER},
            "punchy": {"punch": True, "respond": True},
            "tun": {"disabled": False, "dev": TUN, "mtu": MTU},
            "logging": {"level": "info", "format": "text"},
            "firewall": {"outbound": any_rule, "inbound": any_rule},
        }

    def setup(self) -> None:
        """A fresh CA, one certificate per member, one config each (JSON is valid YAML)."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self._cert("ca", "-name", f"cyphonic-bench-{self.lab.prefix}", "-duration", "24h")
        for host, (name, octet) in MEMBERS.items():
            self._cert(
                "sign",
                "-ca-crt",
                "ca.crt",
                "-ca-key",
                "ca.key",
                "-name",
                name,
                "-ip",
                f"{SUBNET}.{octet}/24",
                "-out-crt",
                f"{name}.crt",
                "-out-key",
                f"{name}.key",
            )
            (self.dir / f"{name}.yml").write_text(json.dumps(self.config(host), indent=1) + "\n")

    # -- processes ------------------------------------------------------------

    def start(self, timeout: float = 30) -> dict:
        """Start the three members; wait for each tun, then for mn -> cn over Nebula."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        for host, (name, _) in MEMBERS.items():
            with open(self.log(host), "ab") as out:
                self.procs[host] = self.lab.popen(
                    host,
                    ["nebula", "-config", str(self.dir / f"{name}.yml")],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        for host in MEMBERS:
            self._wait_active(host, deadline)
        t_active = time.monotonic()
        while True:
            done = self.lab.run("mn", ["ping", "-c", "1", "-W", "1", self.ip("cn")], timeout=10)
            if done.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise LabError(
                    f"nebula: mn cannot ping cn's Nebula address {self.ip('cn')} after {timeout:.0f} s", self._tails()
                )
            time.sleep(0.2)
        return {
            "interfaces_up_s": round(t_active - t0, 3),
            "mn_reaches_cn_s": round(time.monotonic() - t0, 3),
            "pids": self.pids(),
        }

    def _wait_active(self, host: str, deadline: float) -> None:
        while True:
            text = self.log(host).read_text(errors="replace")
            if "Nebula interface is active" in text:
                return
            proc = self.procs[host]
            # A nebula that cannot open its tun logs an error and may keep running.
            if proc.poll() is not None or "Failed to get a tun/tap device" in text or time.monotonic() > deadline:
                raise LabError(f"nebula on {host} did not come up (log {self.log(host)})", self._tails())
            time.sleep(0.05)

    def _tails(self, lines: int = 8) -> str:
        out = []
        for host in MEMBERS:
            try:
                text = self.log(host).read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                text = ["(no log)"]
            out.append(f"--- {host}\n" + "\n".join(text))
        return "\n".join(out)

    def pids(self) -> dict[str, list[int]]:
        return {h: [p.pid] for h, p in self.procs.items() if p.poll() is None}

    def alive(self) -> bool:
        return bool(self.procs) and all(p.poll() is None for p in self.procs.values())

    def stop(self, timeout: float = 5) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def underlay_paths(self) -> list[str]:
        """Which underlay addresses the handshakes between mn and cn used (from the logs)."""
        seen = []
        for host in ("mn", "cn"):
            try:
                text = self.log(host).read_text(errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                if "Handshake message received" in line and "certName=lighthouse" not in line:
                    for word in line.split():
                        if word.startswith("udpAddr="):
                            seen.append(f"{host} <- {word.split('=', 1)[1].strip(chr(34))}")
        return seen

    def settings(self) -> dict:
        """The non-default settings, for the result file (no keys, no paths)."""
        c = self.config("mn")
        return {
            "version": version(),
            "subnet": f"{SUBNET}.0/24",
            "port": PORT,
            "tun": TUN,
            "mtu": MTU,
            "read_buffer": SOCKET_BUFFER,
            "write_buffer": SOCKET_BUFFER,
            "cipher": "aes (default)",
            "punchy": c["punchy"],
            "lighthouse": f"{LIGHTHOUSE_UNDERLAY}:{PORT} in {LIGHTHOUSE_HOST}",
            "allow_lists_deny": sorted(DENY),
        }
