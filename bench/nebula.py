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

A second network for a1 and b1, the two hosts behind their own NAPTs (nat-a,
nat-b) between which CYPHONIC's relayed vs direct paths are measured:
`pair_network(lab, directory, relay)`. Its own CA, lighthouse in cloud on
port PAIR_PORT with its tun disabled (a lighthouse needs none), members on
tun PAIR_TUN, so it can run beside the mn/cn network above. Same settings as
above, and:
- relay=False: a1 and b1 punch through both NAPTs (via the lighthouse), direct.
  Nebula 1.6.1 alone does not get through the lab's two Linux NAPTs: whoever
  sends first, its datagram reaches the other NAPT before that side's own
  datagram has left and leaves a conntrack entry there; the other side's
  outgoing mapping then clashes with it and gets another public port, which
  the first side's NAPT drops (seen: nat-b maps b1:4243 -> 198.18.2.10:12056;
  no tunnel after 30 s). So `start()` first sends one datagram from each
  member's port to the other's NAPT address with TTL 2 (`prepunch`): it opens
  the sender's mapping and dies in `inet`. Nebula's own handshakes then match
  both mappings and the tunnel is direct (`underlay_paths()`).
- relay=True: Nebula's own relay (>= 1.6) on host `trs` (203.0.114.20, global;
  CYPHONIC's TRS runs there too, on port 7002): `relay.am_relay` there,
  `relay.relays: [trs]` and `use_relays` on a1 and b1. The direct path is
  kept out by configuration: a1's remote_allow_list denies nat-b's public
  address, b1's denies nat-a's, so neither learns an underlay address of the
  other it could punch or handshake to (the private ones are unroutable), and
  the handshake can only complete through the relay. `relayed()` checks the
  logs ("relay" in the handshake lines).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from cyphonic.lab import Lab, LabError

from .members import Members

PORT = 4242
SUBNET = "10.99.0"  # /24; clashes neither with 10.96.0.0/16 nor with the lab's links
TUN = "neb0"
MTU = 1400
SOCKET_BUFFER = 4 << 20
LIGHTHOUSE_HOST = "cloud"
LIGHTHOUSE_UNDERLAY = "203.0.113.10"
# lab host -> (certificate name, last octet of the Nebula address)
MEMBERS = {"cloud": ("lighthouse", 1), "mn": ("mn", 2), "cn": ("cn", 3)}
# the overlays of CYPHONIC, wireguard-go and OpenVPN (bench/wireguard.py, openvpn.py) and our own
DENY = {
    "10.96.0.0/16": False,
    "fd7c:1f00::/64": False,
    f"{SUBNET}.0/24": False,
    "10.97.0.0/24": False,
    "10.98.0.0/24": False,
}
# The a1/b1 network (pair_network): its own port and tun, beside the mn/cn one.
PAIR_PORT = 4243
PAIR_TUN = "neb1"
RELAY_HOST = "trs"
PAIR_MEMBERS = {"cloud": ("lighthouse", 1), RELAY_HOST: ("relay", 4), "a1": ("a1", 5), "b1": ("b1", 6)}
NAPT_PUBLIC = {"a1": "198.18.1.10", "b1": "198.18.2.10"}  # nat-a's, nat-b's WAN address


def version() -> str | None:
    if not shutil.which("nebula"):
        return None
    out = subprocess.run(["nebula", "-version"], capture_output=True, text=True).stdout
    return out.strip().removeprefix("Version: ") or None


class Nebula(Members):
    """One Nebula network. The defaults are the mn/cn network of the A/B/C paths;
    `pair_network` makes the a1/b1 one (other members, port, tun, relay)."""

    def __init__(
        self,
        lab: Lab,
        directory: Path | None = None,
        members: dict[str, tuple[str, int]] | None = None,
        pair: tuple[str, str] = ("mn", "cn"),
        port: int = PORT,
        tun: str = TUN,
        lighthouse_tun: bool = True,
        relay: str | None = None,
        deny_remote: dict[str, list[str]] | None = None,
        prepunch: dict[str, str] | None = None,
    ) -> None:
        self.lab = lab
        self.dir = directory or lab.paths.root / "nebula"
        self.procs: dict[str, subprocess.Popen] = {}
        self.members = members or MEMBERS  # lab host -> (certificate name, last octet)
        self.pair = pair  # start() waits until pair[0] pings pair[1]
        self.port = port
        self.tun = tun
        self.lighthouse_tun = lighthouse_tun
        self.relay = relay  # lab host with relay.am_relay; the pair uses it
        self.deny_remote = deny_remote or {}  # lab host -> more underlay CIDRs it must not use
        self.prepunch = prepunch or {}  # lab host -> the peer's NAPT address to open a mapping to

    def ip(self, host: str) -> str:
        return f"{SUBNET}.{self.members[host][1]}"

    def hosts(self) -> list[str]:
        return list(self.members)

    def stop(self, timeout: float = 5) -> None:
        self.terminate(timeout)

    def log(self, host: str) -> Path:
        return self.dir / f"{self.members[host][0]}.log"

    # -- files ----------------------------------------------------------------

    def _cert(self, *args: str) -> None:
        done = subprocess.run(["nebula-cert", *args], capture_output=True, text=True, cwd=self.dir, timeout=30)
        if done.returncode != 0:
            raise LabError(f"nebula-cert {args[0]} failed: {done.stderr.strip() or done.stdout.strip()}")

    def config(self, host: str) -> dict:
        name, _ = self.members[host]
        lighthouse = host == LIGHTHOUSE_HOST
        any_rule = [{"port": "any", "proto": "any", "host": "any"}]
        remote_deny = {**DENY, **{f"{cidr}/32": False for cidr in self.deny_remote.get(host, [])}}
        config = {
            "pki": {
                "ca": str(self.dir / "ca.crt"),
                "cert": str(self.dir / f"{name}.crt"),
                "key": str(self.dir / f"{name}.key"),
            },
            "static_host_map": {} if lighthouse else {self.ip(LIGHTHOUSE_HOST): [f"{LIGHTHOUSE_UNDERLAY}:{self.port}"]},
            "lighthouse": {
                "am_lighthouse": lighthouse,
                "interval": 60,
                "hosts": [] if lighthouse else [self.ip(LIGHTHOUSE_HOST)],
                "local_allow_list": {
                    **DENY,
                    "interfaces": {"cyph.*": False, "neb.*": False, "wg-.*": False, "ovpn-.*": False},
                },
                "remote_allow_list": remote_deny,
            },
            "listen": {
                "host": "0.0.0.0",
                "port": self.port,
                "read_buffer": SOCKET_BUFFER,
                "write_buffer": SOCKET_BUFFER,
            },
            "punchy": {"punch": True, "respond": True},
            "tun": {"disabled": lighthouse and not self.lighthouse_tun, "dev": self.tun, "mtu": MTU},
            "logging": {"level": "info", "format": "text"},
            "firewall": {"outbound": any_rule, "inbound": any_rule},
        }
        if self.relay == host:
            config["relay"] = {"am_relay": True}
        elif self.relay and host in self.pair:
            config["relay"] = {"relays": [self.ip(self.relay)], "use_relays": True}
        return config

    def setup(self) -> None:
        """A fresh CA, one certificate per member, one config each (JSON is valid YAML)."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self._cert("ca", "-name", f"cyphonic-bench-{self.lab.prefix}", "-duration", "24h")
        for host, (name, octet) in self.members.items():
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
        """Start the members; wait for each tun, then for pair[0] -> pair[1] over Nebula.

        The keys "mn_reaches_cn_s" (the mn/cn network's name, kept) and
        "pair_reaches_s" are the same figure."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        src, dst = self.pair
        for host, peer_public in self.prepunch.items():
            self._prepunch(host, peer_public)
        for host, (name, _) in self.members.items():
            self.spawn(host, ["nebula", "-config", str(self.dir / f"{name}.yml")])
        for host in self.members:
            self._wait_active(host, deadline)
        t_active = time.monotonic()
        while True:
            done = self.lab.run(src, ["ping", "-c", "1", "-W", "1", self.ip(dst)], timeout=10)
            if done.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise LabError(
                    f"nebula: {src} cannot ping {dst}'s Nebula address {self.ip(dst)} after {timeout:.0f} s",
                    self._tails(),
                )
            time.sleep(0.2)
        reached = round(time.monotonic() - t0, 3)
        out = {"interfaces_up_s": round(t_active - t0, 3), "mn_reaches_cn_s": reached, "pids": self.pids()}
        if self.pair != ("mn", "cn"):
            out["pair_reaches_s"] = reached
        return out

    def _prepunch(self, host: str, peer_public: str) -> None:
        """One datagram from the member's port to the peer's NAPT port with TTL 2: it opens the
        member's NAPT mapping (nat -> inet) and dies in inet, so the peer's NAPT never sees it."""
        code = (
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            "s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 2); "
            f"s.bind(('0.0.0.0', {self.port})); s.sendto(b'punch', ('{peer_public}', {self.port}))"
        )
        done = self.lab.run(host, [sys.executable, "-c", code], timeout=10)
        if done.returncode != 0:
            raise LabError(f"nebula: pre-punch from {host} failed: {done.stderr.strip()}")

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

    def _handshakes(self) -> list[tuple[str, str]]:
        """(host, log line) of the handshake lines between the pair's two members."""
        lines = []
        # Nebula names the peer by its certificate name in every handshake line.
        for host, peer in (self.pair, self.pair[::-1]):
            try:
                text = self.log(host).read_text(errors="replace")
            except OSError:
                continue
            peer_name = f"certName={self.members[peer][0]}"
            lines += [(host, ln) for ln in text.splitlines() if "andshake" in ln and peer_name in ln]
        return lines

    def underlay_paths(self) -> list[str]:
        """Which underlay addresses the handshakes between the pair used (from the logs).

        A handshake that came through a relay has no underlay address of the
        peer (Nebula logs udpAddr="<nil>"): shown as "relay"."""
        seen = []
        for host, line in self._handshakes():
            if "Handshake message received" in line:
                for word in line.split():
                    if word.startswith("udpAddr="):
                        addr = word.split("=", 1)[1].strip(chr(34))
                        seen.append(f"{host} <- {'relay' if addr == '<nil>' else addr}")
        return seen

    def relayed(self) -> bool | None:
        """Whether the pair's latest handshake went through the relay, from the logs: the
        responder's "Handshake message sent" names it (relay=<ip>), a relayed "received"
        line has udpAddr="<nil>". None before any handshake between the two."""
        lines = [ln for _, ln in self._handshakes() if "stage:2" in ln]
        lines.sort()  # text format: each line starts with time="<RFC 3339>"
        return None if not lines else ("relay=" in lines[-1] or 'udpAddr="<nil>"' in lines[-1])

    def settings(self) -> dict:
        """The non-default settings, for the result file (no keys, no paths)."""
        c = self.config(self.pair[0])
        out = {
            "version": version(),
            "subnet": f"{SUBNET}.0/24",
            "port": self.port,
            "tun": self.tun,
            "mtu": MTU,
            "read_buffer": SOCKET_BUFFER,
            "write_buffer": SOCKET_BUFFER,
            "cipher": "aes (default)",
            "punchy": c["punchy"],
            "lighthouse": f"{LIGHTHOUSE_UNDERLAY}:{self.port} in {LIGHTHOUSE_HOST}",
            "allow_lists_deny": sorted(DENY),
        }
        if self.pair != ("mn", "cn"):
            out["members"] = {h: self.ip(h) for h in self.members}
            out["lighthouse_tun"] = self.lighthouse_tun
            relay = f"{self.relay} ({self.ip(self.relay)}), use_relays on {'/'.join(self.pair)}" if self.relay else None
            out["relay"] = relay
            out["remote_allow_list_deny_extra"] = self.deny_remote
            out["prepunch_ttl2_to"] = self.prepunch
        return out


def pair_network(lab: Lab, directory: Path | None = None, relay: bool = True) -> Nebula:
    """a1 <-> b1 (both behind NAPTs), through Nebula's relay on `trs` or punched direct."""
    members = dict(PAIR_MEMBERS) if relay else {h: m for h, m in PAIR_MEMBERS.items() if h != RELAY_HOST}
    return Nebula(
        lab,
        directory or lab.paths.root / ("nebula-relayed" if relay else "nebula-direct"),
        members=members,
        pair=("a1", "b1"),
        port=PAIR_PORT,
        tun=PAIR_TUN,
        lighthouse_tun=False,  # cloud's neb0 (the mn/cn network) may be up: no second 10.99.0.0/24 route
        relay=RELAY_HOST if relay else None,
        # Each denies the other's NAPT: it learns no underlay address of the other it could reach.
        deny_remote={"a1": [NAPT_PUBLIC["b1"]], "b1": [NAPT_PUBLIC["a1"]]} if relay else None,
        # Direct: open both NAPT mappings first (see the module docstring: Nebula alone loses the race).
        prepunch=None if relay else {"a1": NAPT_PUBLIC["b1"], "b1": NAPT_PUBLIC["a1"]},
    )
