"""Where an idle ping's round trip goes, hop by hop (issue 16, latency).

    .venv/bin/python -m bench.traversal [--count N] [--interval S] [--out DIR] [--prefix P] [--loops compiled|python]

mn pings cn across the tunnel (CYPHONIC, then Nebula in the same lab) while
tcpdump, with nanosecond kernel timestamps, watches four places: mn's tunnel
device and uplink, cn's tunnel device and uplink. Both namespaces read one
clock, so each ping splits into eight timestamps and seven legs:

    mn send   the request on mn's TUN -> its capsule leaving mn's uplink
    wire      mn's uplink -> cn's uplink (veths, inet, cn's NAPT)
    cn recv   the capsule on cn's uplink -> the request on cn's TUN
    cn echo   the kernel answers (request -> reply on cn's TUN)
    cn send, wire back, mn recv   the same for the reply

A daemon's four legs (send/recv at both ends) are the tunnel's cost; the
rest is the kernel's and the lab's. Outer datagrams are matched to pings by
time (the first datagram of the ping's size after the inner event): the
pings are `--interval` apart and nothing else flows. Medians (and p90) per
leg go to bench/results/traversal-<stamp>.{json,md} and traversal-latest.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from cyphonic.lab import Lab, down, netns

from . import nebula, report
from .progress import log

CN = "cn.cyphonic.test"
LEGS = ("mn send", "wire", "cn recv", "cn echo", "cn send", "wire back", "mn recv")
_LINE = re.compile(r"^(\d+\.\d+) IP6? (\S+) > (\S+): (.*)$")
_SEQ = re.compile(r"ICMP echo (request|reply), id \d+, seq (\d+)")
_UDP_LEN = re.compile(r"UDP, length (\d+)")


def capture(lab: Lab, host: str, ifname: str, bpf: str) -> subprocess.Popen:
    return lab.popen(
        host,
        [
            "tcpdump",
            "-i",
            ifname,
            "-n",
            "-l",
            "-q",
            "-tt",
            "--time-stamp-precision=nano",
            "-j",
            "adapter_unsynced",
            bpf,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def parse(text: str) -> list[tuple[float, str, str, str]]:
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            out.append((float(m[1]), m[2], m[3], m[4]))
    return out


def inner_events(lines) -> dict[tuple[str, int], float]:
    """(request|reply, seq) -> time on a tunnel device."""
    events = {}
    for t, _src, _dst, rest in lines:
        m = _SEQ.search(rest)
        if m:
            events.setdefault((m[1], int(m[2])), t)
    return events


def outer_events(lines, own: set[str], size: int) -> tuple[list[float], list[float]]:
    """(sent, received) times of the uplink's datagrams of one ping's size."""
    sent, received = [], []
    for t, src, _dst, rest in lines:
        m = _UDP_LEN.search(rest)
        if not m or int(m[1]) != size:
            continue
        (sent if src.rsplit(".", 1)[0] in own else received).append(t)
    return sent, received


def first_after(times: list[float], t: float, within: float = 0.02) -> float | None:
    for x in times:
        if t < x <= t + within:
            return x
    return None


def legs_of(inner: dict, outer: dict, seqs: range) -> list[list[float]]:
    """Per ping: the seven legs in ms (pings missing any timestamp left out)."""
    rows = []
    for seq in seqs:
        t1, t4 = inner["mn"].get(("request", seq)), inner["cn"].get(("request", seq))
        t5, t8 = inner["cn"].get(("reply", seq)), inner["mn"].get(("reply", seq))
        if None in (t1, t4, t5, t8):
            continue
        t2 = first_after(outer["mn"][0], t1)
        t3 = first_after(outer["cn"][1], t2) if t2 else None
        t6 = first_after(outer["cn"][0], t5)
        t7 = first_after(outer["mn"][1], t6) if t6 else None
        if None in (t2, t3, t6, t7) or not (t3 <= t4 and t7 <= t8):
            continue
        stamps = [t1, t2, t3, t4, t5, t6, t7, t8]
        rows.append([(b - a) * 1000 for a, b in zip(stamps, stamps[1:], strict=False)])
    return rows


def addresses(lab: Lab, host: str, ifname: str) -> set[str]:
    done = lab.run(host, ["ip", "-j", "addr", "show", "dev", ifname], check=True)
    return {a["local"] for link in json.loads(done.stdout) for a in link.get("addr_info", [])}


def measure(lab: Lab, system: str, tun: str, port: int, target: str, size: int, count: int, interval: float) -> dict:
    """One system: ping `count` times with four captures running."""
    procs, uplinks = {}, {}
    for host in ("mn", "cn"):
        up = lab.topology.uplink(host)
        assert up is not None
        uplinks[host] = up.ifname
        procs[(host, "tun")] = capture(lab, host, tun, "icmp")
        procs[(host, "up")] = capture(lab, host, up.ifname, f"udp port {port}")
    time.sleep(1.0)  # tcpdump attaches
    argv = ["ping", "-4", "-c", str(count), "-i", str(interval), "-q", target]
    done = lab.run("mn", argv, timeout=count * interval + 30)
    time.sleep(0.5)
    texts = {}
    for key, p in procs.items():
        os.killpg(p.pid, signal.SIGINT)
        texts[key] = p.communicate(timeout=10)[0]
    inner = {h: inner_events(parse(texts[(h, "tun")])) for h in ("mn", "cn")}
    outer = {h: outer_events(parse(texts[(h, "up")]), addresses(lab, h, uplinks[h]), size) for h in ("mn", "cn")}
    rows = legs_of(inner, outer, range(1, count + 1))
    result: dict = {"system": system, "pings": count, "matched": len(rows), "ping_summary": done.stdout.strip()[-200:]}
    if rows:
        columns = list(zip(*rows, strict=True))
        result["legs_ms"] = {
            leg: {"median": statistics.median(c), "p90": sorted(c)[int(0.9 * (len(c) - 1))]}
            for leg, c in zip(LEGS, columns, strict=True)
        }
        result["rtt_ms"] = statistics.median(sum(r) for r in rows)
        result["tunnel_ms"] = statistics.median(r[0] + r[2] + r[4] + r[6] for r in rows)
    return result


def markdown(result: dict) -> str:
    env = result["environment"]
    systems = [s for s in result["systems"] if "legs_ms" in s]
    lines = [
        "# Where an idle ping's round trip goes",
        "",
        f"{result['started_utc']}, commit {(env.get('git_commit') or '')[:7]}, {env.get('cpu_model')}, "
        f"{result['config']['count']} pings {result['config']['interval']} s apart (median ms, p90 in brackets; "
        "tcpdump's kernel timestamps on both ends' tunnel device and uplink).",
        "",
        "| leg | " + " | ".join(s["system"] for s in systems) + " |",
        "|---|" + "---:|" * len(systems),
    ]
    for leg in LEGS:
        cells = [f"{s['legs_ms'][leg]['median']:.3f} ({s['legs_ms'][leg]['p90']:.3f})" for s in systems]
        lines.append(f"| {leg} | " + " | ".join(cells) + " |")
    lines.append("| **four daemon legs** | " + " | ".join(f"**{s['tunnel_ms']:.3f}**" for s in systems) + " |")
    lines.append("| round trip | " + " | ".join(f"{s['rtt_ms']:.3f}" for s in systems) + " |")
    lines.append("| pings matched | " + " | ".join(f"{s['matched']}/{s['pings']}" for s in systems) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.traversal", description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--prefix", default="trav")
    ap.add_argument("--loops", choices=("compiled", "python"), default="compiled", help="CYPHONIC's packet loops")
    ap.add_argument("--no-nebula", action="store_true")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.traversal: needs root (network namespaces)", file=sys.stderr)
        return 2
    started = datetime.now(UTC)
    result: dict = {
        "started_utc": started.strftime("%Y-%m-%d %H:%M:%SZ"),
        "environment": {**report.environment(), "nebula": nebula.version()},
        "config": vars(args) | {"out": str(args.out)},
        "systems": [],
    }
    lab = Lab(args.prefix, dataplane="offload" if args.loops == "compiled" else "python")
    neb = None
    try:
        if netns.list_namespaces(args.prefix):
            down(args.prefix)
        log(f"lab up (prefix {args.prefix})")
        lab.up(timeout=30)
        lab.run("mn", ["ping", "-4", "-c", "3", "-i", "0.2", CN], timeout=30)
        # an ICMP echo of 64 bytes: IPv4 84 bytes; capsule + 29; Nebula's + 32
        log("CYPHONIC")
        result["systems"].append(
            measure(
                lab, f"CYPHONIC ({args.loops})", "cyph0", 4500, "cn.cyphonic.test", 84 + 29, args.count, args.interval
            )
        )
        if not args.no_nebula and nebula.version():
            neb = nebula.Nebula(lab)
            neb.setup()
            neb.start()
            log("Nebula")
            result["systems"].append(
                measure(lab, "Nebula", "neb0", 4242, neb.ip("cn"), 84 + 32, args.count, args.interval)
            )
    finally:
        if neb is not None:
            neb.stop()
        log("lab down")
        down(args.prefix)
    report.write_stage(args.out, "traversal", started, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
