"""Relayed (through the TRS) vs direct (hole punched) CYPHONIC tunnels.

a1 and b1 sit behind two NAPT routers. With hole punching on (the lab's
default) their tunnel starts on the TRS and moves direct within ~300 ms; with
`hole_punching = false` in both node.toml files it stays on the TRS. Rather
than a second lab, the bench restarts a1's and b1's daemons with the setting
flipped (`switch`), once per repetition, alternating the order:

    rep 0: direct a1->b1, v6->cn, switch to relay, relayed a1->b1
    rep 1: relayed a1->b1, v6->cn, switch to direct, direct a1->b1   ...

v6 (IPv6 only) -> cn (IPv4 behind NAPT) always crosses the TRS: a second
relayed sample with the TRS translating between families.

Each measurement is checked: the client's peer entry must name the expected
path ("direct" or "relay") before the run, and the per-peer counters give
the path after it. The TRS's CPU (every process in its namespace) is metered
over each TCP run; the IP fragmentation counters of the hosts on the path
tell whether the relayed datagrams got fragmented (a too-big inner MTU).

`stage` is the bench's last step of every repetition (unless --no-relay).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from cyphonic.lab import Lab, LabError
from cyphonic.lab.enrollment import derive_node_config

from . import cpu, probes, rtt
from .datapaths import DataPath
from .progress import log
from .stats import dig, short
from .tcp import TcpRun

DOMAIN = "cyphonic.test"
PAIRS = {
    # key: (client, server, expected path, hosts whose tunnel processes are metered)
    "direct": ("a1", "b1", "direct", ("a1", "b1", "trs")),
    "relayed": ("a1", "b1", "relay", ("a1", "b1", "trs")),
    "v6cn": ("v6", "cn", "relay", ("v6", "cn", "trs")),
}
PUNCHED = {"direct": True, "relayed": False}
# Fragmentation counters that should stay 0 on a well-sized path.
FRAG = {"Ip": ("FragCreates", "ReasmReqds", "FragFails"), "Ip6": ("Ip6FragCreates", "Ip6ReasmReqds", "Ip6FragFails")}
FRAG_HOSTS = ("a1", "b1", "v6", "cn", "trs", "inet")


def fqdn(host: str) -> str:
    return f"{host}.{DOMAIN}"


def pids_of(lab: Lab):
    """Tunnel processes per host: the node daemon, or everything in the TRS namespace."""

    def pids(host: str) -> list[int]:
        if host == "trs":
            out = subprocess.run(
                ["ip", "netns", "pids", lab.ns("trs")], capture_output=True, text=True, timeout=10
            ).stdout
            return [int(w) for w in out.split() if w.isdigit()]
        return cpu.daemon_pids(lab.ns(host))

    return pids


def peer(lab: Lab, client: str, server: str) -> dict | None:
    for p in (lab.status(client) or {}).get("peers", []):
        if p.get("fqdn") == fqdn(server):
            return p
    return None


def wait_path(
    lab: Lab, client: str, server: str, want: str, timeout: float = 8.0, ping_extra: tuple[str, ...] = ()
) -> dict:
    """Ping `server` by name until the client's tunnel to it is up and on path `want`.

    For "direct" that is the hole punch's result; for "relay" the path is
    first watched for 1 s more (a punch that should not happen would show).
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    attempts = probes.wait_ping(lab, client, fqdn(server), deadline + 20, ping_extra)
    t_ping = time.monotonic()
    seen = []
    while True:
        p = peer(lab, client, server) or {}
        path = p.get("path")
        if not seen or seen[-1][1] != path:
            seen.append((round(time.monotonic() - t0, 3), path))
        done = path == want and (want != "relay" or time.monotonic() - t_ping >= 1.0)
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return {
        "want": want,
        "path": path,
        "ok": path == want,
        "ping_attempts": attempts,
        "to_ping_s": round(t_ping - t0, 3),
        "path_changes": seen,
        "endpoint": p.get("endpoint"),
        "process": p.get("process"),
    }


def switch(lab: Lab, punch: bool, timeout: float = 30) -> dict:
    """Restart a1's and b1's daemons with hole_punching = punch (node.toml rewritten)."""
    t0 = time.monotonic()
    for host in ("a1", "b1"):
        config = lab.config(host)
        derive_node_config(config, config, {"hole_punching": punch})
    for host in ("a1", "b1"):
        lab.kill(host)
    for host in ("b1", "a1"):
        lab.start(host)
    lab.wait_registered(["a1", "b1"], time.monotonic() + timeout)
    return {"hole_punching": punch, "to_registered_s": round(time.monotonic() - t0, 3)}


def punching(lab: Lab, host: str = "a1") -> bool | None:
    import tomllib

    try:
        return tomllib.loads(Path(lab.config(host)).read_text()).get("hole_punching", True)
    except (OSError, ValueError):
        return None


def frag_counters(lab: Lab) -> dict[str, dict[str, int]]:
    out = {}
    for host in FRAG_HOSTS:
        counts: dict[str, int] = {}
        v4 = lab.run(host, ["cat", "/proc/net/snmp"], timeout=10).stdout.splitlines()
        for head, vals in zip(v4[::2], v4[1::2], strict=False):  # header line, value line
            if head.startswith("Ip:"):
                row = dict(zip(head.split()[1:], vals.split()[1:], strict=False))
                counts.update({k: int(row[k]) for k in FRAG["Ip"] if k in row})
        for line in lab.run(host, ["cat", "/proc/net/snmp6"], timeout=10).stdout.splitlines():
            words = line.split()
            if len(words) == 2 and words[0] in FRAG["Ip6"]:
                counts[words[0]] = int(words[1])
        out[host] = counts
    return out


def frag_delta(before: dict, after: dict) -> dict[str, dict[str, int]]:
    """Only the non-zero changes."""
    out = {}
    for host, counts in after.items():
        d = {k: v - before.get(host, {}).get(k, 0) for k, v in counts.items()}
        d = {k: v for k, v in d.items() if v}
        if d:
            out[host] = d
    return out


def tun_mtus(lab: Lab) -> dict[str, int | None]:
    out = {}
    for host in ("a1", "b1", "v6", "cn"):
        st = lab.status(host) or {}
        words = lab.run(host, ["ip", "link", "show", st.get("tun") or "cyph0"], timeout=10).stdout.split()
        out[host] = int(words[words.index("mtu") + 1]) if "mtu" in words else None
    return out


def measure_pair(lab: Lab, key: str, tcp, ping, fam: tuple[str, ...]) -> dict:
    """Path check, TCP run (tcp(client, target, daemons, counters)) and ping for one pair."""
    client, server, want, _ = PAIRS[key]
    out: dict = {"client": client, "server": server}
    try:
        out["path_check"] = wait_path(lab, client, server, want, ping_extra=fam)
    except LabError as e:
        out["error"] = f"{client} cannot reach {server}: {e}"
        return out
    if not out["path_check"]["ok"]:
        out["error"] = f"{client} -> {server} on path {out['path_check']['path']!r}, not {want!r}: not measured"
        return out
    before = frag_counters(lab)
    out["tcp"] = tcp(key)
    out["fragmentation"] = frag_delta(before, frag_counters(lab))
    out["tcp"]["path_after"] = probes.peer_counters(lab, client, fqdn(server))
    after_path = (out["tcp"]["path_after"] or {}).get("path")
    if after_path != want:
        out["tcp"]["error"] = f"path changed to {after_path!r} during the TCP run"
    out["rtt"] = ping(key)
    return out


def data_paths(lab: Lab, fam: tuple[str, ...]) -> dict[str, DataPath]:
    """The three pairs as data paths: client -> server's name, `fam` for iperf3 and ping."""
    return {
        key: DataPath(
            key,
            f"CYPHONIC {client} -> {server} ({key})",
            client,
            fqdn(server),
            iperf_extra=fam,
            ping_extra=fam,
            pids_of=pids_of(lab),
            hosts=hosts,
            links=[("trs", "eth0")],  # what crossed the relay's uplink: ~2x the payload when relayed
            counters=(client, fqdn(server)),
        )
        for key, (client, server, _, hosts) in PAIRS.items()
    }


def config(lab: Lab, rpaths: dict[str, DataPath]) -> dict:
    """What the JSON records of the relay part before measuring."""
    return {
        "tun_mtu": tun_mtus(lab),
        "pairs": {k: {"client": p.client, "target": p.target, "path": PAIRS[k][2]} for k, p in rpaths.items()},
    }


def stage(lab: Lab, rpaths: dict[str, DataPath], seconds: float, tcp: TcpRun, fam: tuple[str, ...], rep: dict) -> None:
    """Direct and relayed a1 -> b1 (one switch of a1's and b1's hole_punching) and v6 -> cn.

    The order alternates from one repetition to the next: the state the
    previous repetition left is measured first, then v6 -> cn, then the switch.
    """
    out = rep["relay"] = {}
    first = "direct" if punching(lab) is not False else "relayed"
    second = "relayed" if first == "direct" else "direct"
    out["order"] = [first, "v6cn", second]

    def measure_one(key: str) -> None:
        p = rpaths[key]
        out[key] = measure_pair(lab, key, lambda k: tcp(p, seconds), lambda k: rtt.ping(lab, p), fam)

    measure_one(first)
    measure_one("v6cn")
    try:
        out["switch"] = switch(lab, PUNCHED[second])
    except LabError as e:
        out["switch"] = {"error": str(e), "detail": getattr(e, "detail", None)}
        out[second] = {"error": f"restart of a1/b1 failed: {e}"}
    else:
        measure_one(second)
    log(
        "  "
        + " | ".join(
            f"{k}: TCP {short(dig(out, k, 'tcp', 'gbps'))} Gbit/s, "
            f"RTT {short(dig(out, k, 'rtt', 'avg_ms'))} ms, "
            f"TRS {short(dig(out, k, 'tcp', 'cpu', 'daemon_cpu_s', 'trs'))} CPU-s"
            for k in ("direct", "relayed", "v6cn")
        )
    )
