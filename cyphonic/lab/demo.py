"""`cyphonic lab demo`: bring the lab up, tour it with stock tools from mn, tear down.

Every step is an ordinary program a user would type, run inside mn's
namespace and addressed by name; the tour prints one line per step.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable

from . import apps
from .errors import LabError
from .instance import Lab
from .topology import Role

FILE_SIZE = 1 << 20


def run_demo(prefix: str) -> int:
    lab = Lab(prefix)
    if lab.is_up():
        # Not ours to tear down afterwards: leave someone's running lab alone.
        print(
            f"cyphonic lab: a lab with prefix {prefix!r} is already up; "
            f"use another --prefix or `cyphonic lab down --prefix {prefix}`",
            file=sys.stderr,
        )
        return 1
    try:
        lab.up()
        shown = lab.show()["hosts"]
        for name in ("mn", "cn", "a1", "b1", "v6"):
            h = shown[name]
            print(f"{name}: {' '.join(h['addresses'])} -> {h['fqdn']} vip4 {h['vip4']} vip6 {h['vip6']}")
        print(f"trs: {' '.join(shown['trs']['addresses'])} (Tunnel Relay Service)")
        for name, h in shown.items():
            if h["role"] == "general":
                print(f"{name}: {h['dhcp']} {h['mac']}, leased {h['lease']} -> {h['fqdn']}")
        print("cn, a1 and b1 sit behind NAPT routers; v6 has IPv6 only; gn1-gn3 and gn6 are stock devices")
        print("behind the adapters, running only a DHCP client. Steps run in mn unless a host is named.")
        return _tour(lab)
    except LabError as e:
        print(f"cyphonic lab: {e}", file=sys.stderr)
        for line in e.detail.splitlines():
            print(f"  | {line}", file=sys.stderr)
        return 1
    finally:
        lab.down()
        print("lab down.")


def _tour(lab: Lab) -> int:
    cn = lab.fqdn("cn")
    assert cn is not None  # the demo topology's cn is a node, so it has a name
    steps: list[tuple[str, Callable[[], str]]] = [
        (f"dig +short {cn} A", lambda: _dig(lab, cn, "A")),
        (f"dig +short {cn} AAAA", lambda: _dig(lab, cn, "AAAA")),
        (f"ping -c 3 {cn}", lambda: _ping(lab, cn)),
        (f"curl http://{cn}:8000/demo.bin", lambda: _curl(lab, cn)),
        (f"iperf3 -c {cn} -t 3", lambda: _iperf3(lab, cn)),
    ]
    failed = 0
    for label, step in steps:
        try:
            print(f"  {label:<44} {step()}")
        except LabError as e:
            failed += 1
            print(f"  {label:<44} FAILED: {e}")
    print("  cyphonic status:")
    done = lab.run("mn", ["cyphonic", "status"], timeout=10)
    for line in (done.stdout + done.stderr).splitlines():
        print(f"    {line}")
    # NAPT to NAPT (relay, then a hole punch) and IPv6-only to IPv4 behind NAPT (relay)
    # stock devices behind the adapter (DHCP, DNS and ARP answered by it):
    # to cn, to gn3 behind a second adapter (both behind NAPT), to each
    # other; cn reaching gn1; the IPv6 device gn6 reaching mn
    pairs = (("a1", "b1"), ("v6", "cn"), ("gn1", "cn"), ("gn1", "gn3"), ("gn2", "gn1"), ("cn", "gn1"), ("gn6", "mn"))
    for client, server in pairs:
        label = f"{client}: ping -c 3 {server}.cyphonic.test"
        try:
            print(f"  {label:<44} {_ping(lab, f'{server}.cyphonic.test', client)}, path {_path(lab, client, server)}")
        except LabError as e:
            failed += 1
            print(f"  {label:<44} FAILED: {e}")
    print("  cyphonic status (on the adapter):")
    shown = lab.run("adapter", ["cyphonic", "status"], timeout=10)
    for line in (shown.stdout + shown.stderr).splitlines():
        print(f"    {line}")
    return 1 if failed or done.returncode or shown.returncode else 0


def _path(lab: Lab, client: str, server: str) -> str:
    time.sleep(0.5)  # a hole punch settles within a few hundred ms
    if lab.topology.host(client).role == Role.GENERAL:  # its adapter keeps its tunnels
        fqdn = lab.fqdn(client)
        adapters = [lab.status(h.name) or {} for h in lab.topology.with_role(Role.ADAPTER)]
        st: dict = next((g for a in adapters for g in a.get("general_nodes", []) if g.get("fqdn") == fqdn), {})
    else:
        st = lab.status(client) or {}
    peers = {p["fqdn"]: p for p in st.get("peers", [])}
    peer = peers.get(f"{server}.cyphonic.test")
    return f"{peer['path']} via {peer['endpoint']}" if peer else "unknown"


def _dig(lab: Lab, name: str, rtype: str) -> str:
    out = lab.run("mn", ["dig", "+short", "+time=5", "+tries=1", name, rtype]).stdout.split()
    if not out:
        raise LabError("no answer")
    return " ".join(out)


def _ping(lab: Lab, name: str, host: str = "mn") -> str:
    done = lab.run(host, ["ping", "-c", "3", "-W", "2", name], timeout=20)
    sent, got, avg = apps.ping_summary(done.stdout)
    if got == 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise LabError(lines[-1] if lines else "no reply")
    return f"{got}/{sent} replies, avg rtt {avg} ms"


def _curl(lab: Lab, name: str) -> str:
    www = lab.paths.root / "www"
    www.mkdir(exist_ok=True)
    data = os.urandom(FILE_SIZE)
    (www / "demo.bin").write_bytes(data)
    server = apps.serve_http(lab, "cn", www)
    try:
        done = lab.run(
            "mn", ["curl", "-sS", "--max-time", "20", f"http://{name}:8000/demo.bin"], text=False, timeout=30
        )
    finally:
        apps.stop(server)
    if done.returncode != 0:
        raise LabError(done.stderr.decode(errors="replace").strip())
    if done.stdout != data:
        raise LabError(f"got {len(done.stdout)} bytes that differ from the {len(data)} served")
    return f"{len(data)} bytes, identical (sha256 {hashlib.sha256(data).hexdigest()[:12]}...)"


def _iperf3(lab: Lab, name: str) -> str:
    server = apps.serve_iperf3(lab, "cn")
    try:
        report = apps.iperf3(lab, "mn", name, seconds=3)
    finally:
        apps.stop(server)
    bps = report["end"]["sum_received"]["bits_per_second"]
    return f"{bps / 1e6:.0f} Mbit/s TCP"
