"""OpenVPN 2.6 (Debian's `openvpn`) between mn and cn, as a third reference tunnel.

Peer-to-peer TLS mode without a CA, the OpenVPN 2.6 way: each side has a
self-signed EC certificate (`openssl req -x509`, P-256, made at every run into
the lab's state dir `<root>/openvpn/`, which `cyphonic.lab.down` removes) and
pins the other's with `peer-fingerprint`. mn (198.51.100.10, global) is the
TLS server on UDP 1194 and accepts its peer from any address; cn, behind the
NAPT nat-cn, is the TLS client with `remote 198.51.100.10 1194` and `nobind`.
Point-to-point addresses 10.97.0.2 (mn) and 10.97.0.3 (cn) on tun
`ovpn-bench`. Nothing but this code is committed.

Settings that differ from OpenVPN's defaults, and why:
- tun-mtu 1400 (default 1500): the same inner MTU as CYPHONIC's cyph0 and
  Nebula's neb0. The outer datagram is then ~1470 B and fits the lab's
  1500 B links; mssfix (default 1492, counted on the outer packet in 2.6)
  does not lower the MSS below what the inner MTU gives.
- sndbuf / rcvbuf 4 MiB (default: the kernel's): the CYPHONIC node's socket
  buffers (SOCKET_BUFFER in cyphonic/node/daemon.py), as for Nebula.
  OpenVPN uses SO_SNDBUF/SO_RCVBUF (capped by net.core.*mem_max, 4 MiB here);
  `start()` records what the socket got (`ss -m`).
- data-ciphers AES-256-GCM (default list AES-256-GCM:AES-128-GCM:
  CHACHA20-POLY1305, negotiated to AES-256-GCM anyway): pinned, the same
  cipher as Nebula's and CYPHONIC's AES-GCM.
- disable-dco: OpenVPN 2.6 uses the ovpn-dco kernel module (data channel in
  the kernel) when it is loaded. It is not here, but the flag makes sure the
  data channel stays in the userspace process whatever the kernel has, like
  the other two tunnels. `start()` records the tun device's kind ("tun").
- keepalive 10 60 (default none): cn's NAPT mapping stays open, and a dead
  peer is noticed.
- verb 3 (the usual), so the log shows the TLS and cipher negotiation.
Everything else is default (no compression, tun txqueuelen 100, no fast-io).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time

from cyphonic.lab import LabError

from .members import PointToPoint

PORT = 1194
SUBNET = "10.97.0"  # /24: clear of 10.96.0.0/16, 10.98.0.0/24 (WireGuard), 10.99.0.0/24 (Nebula)
TUN = "ovpn-bench"
MTU = 1400
SOCKET_BUFFER = 4 << 20
CIPHER = "AES-256-GCM"
SERVER = "mn"
SERVER_UNDERLAY = "198.51.100.10"
MEMBERS = {"mn": 2, "cn": 3}  # lab host -> last octet of its overlay address
READY = "Initialization Sequence Completed"


def version() -> str | None:
    if not shutil.which("openvpn"):
        return None
    out = subprocess.run(["openvpn", "--version"], capture_output=True, text=True).stdout
    m = re.match(r"OpenVPN (\S+)", out)
    return m.group(1) if m else None


class OpenVpn(PointToPoint):
    SUBNET = SUBNET
    OCTETS = MEMBERS
    STATE = "openvpn"
    TUN = TUN

    # -- files ----------------------------------------------------------------

    def _openssl(self, *args: str) -> str:
        done = subprocess.run(["openssl", *args], capture_output=True, text=True, cwd=self.dir, timeout=30)
        if done.returncode != 0:
            raise LabError(f"openssl {args[0]} failed: {done.stderr.strip()}")
        return done.stdout

    def fingerprint(self, host: str) -> str:
        out = self._openssl("x509", "-in", f"{host}.crt", "-noout", "-fingerprint", "-sha256")
        return out.strip().split("=", 1)[1]  # "sha256 Fingerprint=AB:CD:..."

    def options(self, host: str) -> list[str]:
        """The member's config file lines (no secrets: the key is a file)."""
        (peer,) = [h for h in MEMBERS if h != host]
        lines = [
            f"dev {TUN}",
            "dev-type tun",
            "proto udp",
            "disable-dco",
            f"cert {self.dir / f'{host}.crt'}",
            f"key {self.dir / f'{host}.key'}",
            f"peer-fingerprint {self.fingerprint(peer)}",
            f"ifconfig {self.ip(host)} {self.ip(peer)}",
            f"tun-mtu {MTU}",
            f"data-ciphers {CIPHER}",
            f"sndbuf {SOCKET_BUFFER}",
            f"rcvbuf {SOCKET_BUFFER}",
            "keepalive 10 60",
            "verb 3",
        ]
        if host == SERVER:
            lines += ["tls-server", f"lport {PORT}", "dh none"]  # ECDHE only: no DH parameters to make
        else:
            lines += ["tls-client", f"remote {SERVER_UNDERLAY} {PORT}", "nobind"]
        return lines

    def setup(self) -> None:
        """A fresh self-signed EC certificate per member and one config each."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True, mode=0o700)
        for host in MEMBERS:
            self._openssl(
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", f"{host}.key", "-out", f"{host}.crt", "-days", "2", "-subj", f"/CN=bench-{host}",
            )  # fmt: skip
        for host in MEMBERS:
            (self.dir / f"{host}.conf").write_text("\n".join(self.options(host)) + "\n")

    # -- processes ------------------------------------------------------------

    def start(self, timeout: float = 30) -> dict:
        """Start both; wait for "Initialization Sequence Completed" in each log, then mn -> cn."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        for host in MEMBERS:
            self.spawn(host, ["openvpn", "--config", str(self.dir / f"{host}.conf")])
        for host in MEMBERS:
            self._wait_ready(host, deadline)
        t_ready = time.monotonic()
        self.wait_ping("openvpn", deadline, timeout)
        t_ping = time.monotonic()
        self.sockets = {h: self._socket_buffers(h) for h in MEMBERS}
        return {
            "interfaces_up_s": round(t_ready - t0, 3),
            "mn_reaches_cn_s": round(t_ping - t0, 3),
            "pids": self.pids(),
            "socket_buffers": self.sockets,
            "link_kind": self._link_kind("mn"),
            "dco": self.dco(),
            "cipher": self._negotiated_cipher(),
        }

    def _wait_ready(self, host: str, deadline: float) -> None:
        while READY not in self.log(host).read_text(errors="replace"):
            if self.procs[host].poll() is not None or time.monotonic() > deadline:
                raise LabError(f"openvpn on {host} did not come up (log {self.log(host)})", self._tails())
            time.sleep(0.05)

    def _socket_buffers(self, host: str) -> dict:
        """rb/tb (bytes) of openvpn's UDP socket from `ss -m` (the kernel doubles what was asked)."""
        pid = self.procs[host].pid
        out = self.lab.run(host, ["ss", "-Huampn"], timeout=10).stdout
        for entry in re.split(r"\n(?=\S)", out):
            if f"pid={pid}," in entry and (m := re.search(r"rb(\d+),t\d+,tb(\d+)", entry)):
                return {"rcvbuf": int(m.group(1)), "sndbuf": int(m.group(2))}
        return {}

    def _link_kind(self, host: str) -> str:
        """The device's kind: "tun" for the userspace data channel; DCO would make an "ovpn-dco" one."""
        out = self.lab.run(host, ["ip", "-d", "link", "show", TUN], timeout=10).stdout
        return "tun" if re.search(r"^\s+tun ", out, re.M) else ("ovpn-dco" if "ovpn" in out else "?")

    def dco(self) -> bool:
        """Whether either side's data channel is in the kernel (from the logs: "DCO device ... opened")."""
        text = "".join(self.log(h).read_text(errors="replace") for h in MEMBERS if self.log(h).exists())
        return bool(re.search(r"DCO device \S+ opened", text))

    def _negotiated_cipher(self) -> str | None:
        m = re.search(r"Data Channel: cipher '([^']+)'", self.log(SERVER).read_text(errors="replace"))
        return m.group(1) if m else None

    def settings(self) -> dict:
        """The non-default settings, for the result file (no keys, no paths)."""
        return {
            "version": version(),
            "mode": "p2p TLS, self-signed EC P-256 certificates pinned with peer-fingerprint",
            "subnet": f"{SUBNET}.0/24",
            "port": PORT,
            "proto": "udp",
            "tun": TUN,
            "tun_mtu": MTU,
            "data_ciphers": CIPHER,
            "sndbuf": SOCKET_BUFFER,
            "rcvbuf": SOCKET_BUFFER,
            "socket_buffers": self.sockets or None,
            "keepalive": "10 60",
            "dco": "disabled (--disable-dco): userspace data channel",
        }


Tunnel = OpenVpn  # the name bench/datapaths.py starts every other tunnel by
