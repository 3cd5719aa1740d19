"""wireguard-go (Debian's `wireguard-go`, userspace) between mn and cn, as a second reference tunnel.

Userspace on purpose: CYPHONIC and Nebula are userspace programs, the kernel
module would be a different class of data path. Keys are made with `wg genkey`
at every run into the lab's state dir (`<root>/wireguard/`, removed by
`cyphonic.lab.down`); nothing but this code is committed. mn (198.51.100.10,
global) listens on UDP 51820 and has no endpoint for cn: it learns cn's mapped
address from cn's first handshake. cn, behind the NAPT nat-cn, has mn's
endpoint and `persistent-keepalive 25`, which keeps its NAPT mapping open and
makes it send the first handshake as soon as its interface comes up.

The UAPI socket: wireguard-go listens on /var/run/wireguard/<ifname>.sock,
and `wg` looks for it there. That directory is not per network namespace, so
two members (or two labs) with the same interface name would collide ("unix
socket in use"). Each wireguard-go therefore runs in a mount namespace of its
own (`ip netns exec` makes one) with a private tmpfs on /run/wireguard, and
`wg` is run through `nsenter` into that process's mount and network
namespaces. So the device has the same name, TUN, in every namespace.

Settings that differ from the defaults, and why:
- Link MTU 1400 (wireguard-go's default is 1420): the same inner MTU as
  CYPHONIC's cyph0 and Nebula's neb0.
- ListenPort 51820 on both (default: random); cn's is mapped by its NAPT anyway.
- cn: PersistentKeepalive 25 (default off): cn is behind a NAPT, as WireGuard's
  documentation recommends for that case.
- LOG_LEVEL=verbose (default: error): handshakes in the log, for the tails.
Socket buffers: wireguard-go 0.0.20220316 sets no SO_RCVBUF/SO_SNDBUF (later
versions ask for 7 MiB); it runs with the kernel default (net.core.rmem_default,
212992 B here), not the 4 MiB CYPHONIC, Nebula and OpenVPN get. `start()`
records what the socket actually has (`ss -m`). This version has no UDP
GSO/GRO either (added in 0.0.20230223): one system call per packet.
Cipher: WireGuard's only one, ChaCha20-Poly1305.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

from cyphonic.lab import LabError

from .members import PointToPoint

PORT = 51820
SUBNET = "10.98.0"  # /24: clear of 10.96.0.0/16, 10.97.0.0/24 (OpenVPN), 10.99.0.0/24 (Nebula)
TUN = "wg-bench"
MTU = 1400
KEEPALIVE = 25
SERVER = "mn"  # the member with a global address; the other one dials it
SERVER_UNDERLAY = "198.51.100.10"
MEMBERS = {"mn": 2, "cn": 3}  # lab host -> last octet of its overlay address
SOCK_DIR = "/run/wireguard"  # = /var/run/wireguard, wireguard-go's and wg's compiled-in path


def version() -> str | None:
    if not shutil.which("wireguard-go") or not shutil.which("wg"):
        return None
    out = subprocess.run(["wireguard-go", "--version"], capture_output=True, text=True).stdout
    first = out.strip().splitlines()[0] if out.strip() else ""
    return first.removeprefix("wireguard-go ") or None


class WireGuard(PointToPoint):
    SUBNET = SUBNET
    OCTETS = MEMBERS
    STATE = "wireguard"
    TUN = TUN

    # -- files ----------------------------------------------------------------

    def _key(self, host: str) -> str:
        return (self.dir / f"{host}.key").read_text().strip()

    def _pub(self, host: str) -> str:
        return (self.dir / f"{host}.pub").read_text().strip()

    def setup(self) -> None:
        """Fresh key pairs and one `wg setconf` file per member (mode 0600)."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True, mode=0o700)
        for host in MEMBERS:
            key = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout.strip()
            pub = subprocess.run(["wg", "pubkey"], input=key, capture_output=True, text=True, check=True).stdout
            self._write(f"{host}.key", key + "\n")
            self._write(f"{host}.pub", pub.strip() + "\n")
        for host in MEMBERS:
            (peer,) = [h for h in MEMBERS if h != host]
            lines = ["[Interface]", f"PrivateKey = {self._key(host)}", f"ListenPort = {PORT}", "", "[Peer]"]
            lines += [f"PublicKey = {self._pub(peer)}", f"AllowedIPs = {self.ip(peer)}/32"]
            if host != SERVER:
                lines += [f"Endpoint = {SERVER_UNDERLAY}:{PORT}", f"PersistentKeepalive = {KEEPALIVE}"]
            self._write(f"{host}.conf", "\n".join(lines) + "\n")

    def _write(self, name: str, text: str) -> None:
        path = self.dir / name
        path.touch(mode=0o600)
        path.write_text(text)

    # -- processes ------------------------------------------------------------

    def wg(self, host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """`wg ARGS` against the member's wireguard-go (its mount namespace holds the UAPI socket)."""
        pid = self.procs[host].pid
        cmd = ["nsenter", "-t", str(pid), "-m", "-n", "wg", *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        if check and done.returncode != 0:
            raise LabError(
                f"wireguard: {' '.join(['wg', *args])} on {host} failed: {done.stderr.strip()}", self._tails()
            )
        return done

    def start(self, timeout: float = 30) -> dict:
        """Start mn, then cn (whose first keepalive makes the handshake); wait until mn pings cn."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        # The private tmpfs is mounted in the mount namespace `ip netns exec`
        # made for this process only: it goes away with the process.
        script = (
            f"mkdir -p {SOCK_DIR} && mount -t tmpfs -o mode=0700,size=1m wgsock {SOCK_DIR} && "
            f"exec env WG_PROCESS_FOREGROUND=1 LOG_LEVEL=verbose wireguard-go -f {TUN}"
        )
        for host in MEMBERS:  # mn first: it must be listening when cn's first handshake arrives
            self.spawn(host, ["sh", "-c", script])
            self._wait_socket(host, deadline)
            self.wg(host, "setconf", TUN, str(self.dir / f"{host}.conf"))
            for cmd in (
                ["ip", "addr", "add", f"{self.ip(host)}/24", "dev", TUN],
                ["ip", "link", "set", TUN, "mtu", str(MTU), "up"],
            ):
                done = self.lab.run(host, cmd, timeout=10)
                if done.returncode != 0:
                    raise LabError(f"wireguard: {' '.join(cmd)} on {host}: {done.stderr.strip()}", self._tails())
        t_up = time.monotonic()
        self.wait_ping("wireguard", deadline, timeout)
        t_ping = time.monotonic()
        self.sockets = {h: self._socket_buffers(h) for h in MEMBERS}
        return {
            "interfaces_up_s": round(t_up - t0, 3),
            "mn_reaches_cn_s": round(t_ping - t0, 3),
            "pids": self.pids(),
            "socket_buffers": self.sockets,
            "link_kind": self._link_kind("mn"),
            "mn_learned_endpoint": self.endpoint(SERVER),
        }

    def _wait_socket(self, host: str, deadline: float) -> None:
        proc = self.procs[host]
        # /proc/<pid>/root shows the file system as that process sees it (its tmpfs).
        sock = Path(f"/proc/{proc.pid}/root{SOCK_DIR}/{TUN}.sock")
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"wireguard-go on {host} did not come up (log {self.log(host)})", self._tails())
            time.sleep(0.05)

    def _socket_buffers(self, host: str) -> dict:
        """rb/tb (bytes) of wireguard-go's UDP sockets, from `ss -m`: what the kernel gave it."""
        out = self.lab.run(host, ["ss", "-Huampn", f"sport = :{PORT}"], timeout=10).stdout
        found = re.findall(r"rb(\d+),t\d+,tb(\d+)", out)
        return {"rcvbuf": int(found[0][0]), "sndbuf": int(found[0][1])} if found else {}

    def _link_kind(self, host: str) -> str:
        """The device's kind: "tun" for wireguard-go; the kernel module's would say "wireguard"."""
        out = self.lab.run(host, ["ip", "-d", "link", "show", TUN], timeout=10).stdout
        return "tun" if re.search(r"^\s+tun ", out, re.M) else ("wireguard" if "wireguard" in out else "?")

    def endpoint(self, host: str) -> str | None:
        """The underlay address the member has for its peer (mn: cn's NAPT mapping, learned)."""
        if host not in self.procs or self.procs[host].poll() is not None:
            return None
        out = self.wg(host, "show", TUN, "endpoints", check=False).stdout.split()
        return out[1] if len(out) > 1 and out[1] != "(none)" else None

    def settings(self) -> dict:
        """The non-default settings, for the result file (no keys, no paths)."""
        return {
            "version": version(),
            "implementation": "wireguard-go (userspace, tun device)",
            "subnet": f"{SUBNET}.0/24",
            "port": PORT,
            "tun": TUN,
            "mtu": MTU,
            "cipher": "ChaCha20-Poly1305 (WireGuard's only)",
            "persistent_keepalive": {"cn": KEEPALIVE},
            "endpoint": {"cn": f"{SERVER_UNDERLAY}:{PORT}", "mn": "learned"},
            "socket_buffers": self.sockets or "kernel default (wireguard-go sets none)",
        }


Tunnel = WireGuard  # the name bench/datapaths.py starts every other tunnel by
