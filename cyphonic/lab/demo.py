"""`cyphonic lab demo`: bring the lab up, tour it with stock tools from mn, tear down.

Every step is an ordinary program a user would type, run inside mn's
namespace and addressed by name; the tour prints one line per step. One step
moves mn (global4a -> global4b -> napt -> home) while curl downloads a file
from cn and ping runs beside it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable

from . import apps
from .errors import LabError
from .handover import Pinger
from .instance import Lab
from .mobility import describe
from .topology import Role

FILE_SIZE = 1 << 20
# The moving download: 6 MiB at 2 MiB/s lasts ~3 s, long enough for three moves.
MOVES = ("global4b", "napt", "home")
MOVING_SIZE, MOVING_RATE = 6 << 20, "2M"


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
    failed += _moving(lab, cn)
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


def _moving(lab: Lab, name: str) -> int:
    """mn moves global4a -> global4b -> napt -> home while curl downloads from cn
    (and ping runs beside it); 1 if the file did not arrive intact."""
    url = f"http://{name}:8000/moving.bin"
    print(f"  mn moves while it runs: curl --limit-rate {MOVING_RATE} {url}, ping -i 0.01 {name}")
    www = lab.paths.root / "www"
    www.mkdir(exist_ok=True)
    data = os.urandom(MOVING_SIZE)
    (www / "moving.bin").write_bytes(data)
    server = apps.serve_http(lab, "cn", www)
    pinger = Pinger(lab, "mn", (lab.status("cn") or {}).get("vip4") or name)
    curl = lab.popen(
        "mn",
        ["curl", "-sS", "--max-time", "30", "--limit-rate", MOVING_RATE, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    starts, moved, paths = [], [], []
    try:
        time.sleep(0.7)  # the download is under way
        for network in MOVES:
            starts.append(time.time())
            moved.append(describe(lab.move("mn", network)))
            paths.append(_path(lab, "mn", "cn"))  # half a second later
        body, err = curl.communicate(timeout=40)
    except (LabError, subprocess.TimeoutExpired) as e:
        curl.kill()
        body, err = curl.communicate()
        err = err or str(e).encode()
    finally:
        pinger.stop()
        apps.stop(server)
        if lab.network("mn") != "global4a":  # put the lab back for the steps after this one
            lab.move("mn", "home")
    for line, gap, path in zip(moved, pinger.gaps(starts), paths, strict=False):
        print(f"    {line}")
        print(f"      ping: {gap.line()}; to cn: {path}")
    label = f"curl {url}"
    if curl.returncode != 0 or body != data:
        why = err.decode(errors="replace").strip() or f"{len(body)} bytes that differ from the {len(data)} served"
        print(f"  {label:<44} FAILED: {why}")
        return 1
    digest = hashlib.sha256(data).hexdigest()[:12]
    print(f"  {label:<44} {len(data)} bytes across {len(moved)} moves, identical (sha256 {digest}...)")
    return 0
