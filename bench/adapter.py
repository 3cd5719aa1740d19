"""The CYPHONIC adapter: a stock general node (gn1, dhclient) behind `adapter` vs a node (mn).

gn1 runs nothing of ours: it gets its virtual address, DNS server and
default route from the adapter's DHCP, and the adapter answers its ARP and
DNS and carries its traffic over the adapter's tunnels. The seed paper's
evaluation, repeated in the bench lab (after the other stages, same lab):

- TCP gn1 -> cn vs mn -> cn (iperf3, interleaved repetitions) and the ratio;
- UDP: highest rate gn1 -> cn with < 0.1% loss (`probes.udp_search`);
- the seed's offered-load table: UDP at 10..50 Mbit/s, then 100, 200, 400
  ... until loss passes 1%, client -> cn and cn -> client (iperf3 -R), for
  gn1 (general node) and mn (node);
- RTT: ping gn1 -> cn vs mn -> cn (per-packet times, median);
- DNS seen by the general node: dig from gn1 of names resolved for the first
  time (cold: the adapter selects the route) vs repeated (warm);
- ARP seen by the general node: scapy in gn1's namespace, who-has cn's
  virtual IPv4, time from the request leaving to the answer arriving;
- the adapter's own timers (status "timers") next to mn's.

`stage` is called by run.py after `measure` (unless --adapter 0); it runs
its own iperf3 server in cn (PORT), so it does not depend on the others.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import time

from cyphonic.lab import Lab, LabError, apps, general_nodes

from . import probes
from .progress import log
from .stats import percentile, short

GN, NODE, SERVER = "gn1", "mn", "cn"
CN = "cn.cyphonic.test"
PORT = 5202
FAMILY = ("-4",)
LENGTH = 1400 - 28  # gn1's eth0 and mn's cyph0 MTU 1400: one datagram per packet
SEED_RATES = (10, 20, 30, 40, 50)  # Mbit/s, the seed's offered-load table
EXTEND_FROM, EXTEND_MAX = 100, 6400  # then doubling until loss > TABLE_LOSS
TABLE_LOSS = 1.0  # %
UDP_LOSS = 0.1  # % for the highest-rate search
COLD_NAMES = ("gn3", "v6", "a1", "b1", "mn", "cn")  # never contacted by gn1 before this stage
WARM_REPEATS = 5
ARP_COUNT = 50
PING_COUNT, PING_INTERVAL = 20, 0.05
GOALS = {
    "tcp_ratio": (">=", 0.8),  # general node / node
    "udp_max_mbps": (">=", 300),
    "dns_cold_query_ms": ("<=", 5),  # route selection as seen by the general node (seed 19.74 ms)
    "arp_adapter_p50_ms": ("<=", 0.05),  # adapter's ARP processing (seed 0.32 ms)
}

# DNS response time as the general node sees it, to the microsecond (dig
# reports whole milliseconds, in steps of the kernel tick here): one UDP
# query per name to the server in gn1's own resolv.conf, with dnspython.
_DNS_SCRIPT = r"""
import json, sys, time
import dns.message, dns.query, dns.rcode
server = next(l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver"))
out = []
for name in sys.argv[1:]:
    q = dns.message.make_query(name, "A")
    t0 = time.perf_counter()
    r = dns.query.udp(q, server, timeout=5)
    ms = (time.perf_counter() - t0) * 1000
    out.append({"name": name, "ms": ms, "rcode": dns.rcode.to_text(r.rcode()), "answer": [str(a) for a in r.answer]})
print(json.dumps(out))
"""

_ARP_SCRIPT = r"""
import json, sys
from scapy.all import ARP, Ether, conf, srp
conf.verb = 0
iface, src, dst, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
times, missing = [], 0
for _ in range(n):
    ans, _u = srp(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, psrc=src, pdst=dst), iface=iface, timeout=1)
    if ans:
        s, r = ans[0]
        times.append((r.time - s.sent_time) * 1000)
        mac = r[ARP].hwsrc
    else:
        missing += 1
print(json.dumps({"times_ms": times, "missing": missing, "mac": mac if times else None}))
"""


def _tcp(lab: Lab, client: str, seconds: float) -> dict:
    try:
        r = probes.iperf3(lab, client, CN, PORT, seconds, extra=FAMILY)
    except LabError as e:
        return {"error": str(e)}
    end = r.get("end", {})
    rx = end.get("sum_received") or {}
    return {
        "gbps": rx.get("bits_per_second", 0) / 1e9 if rx else None,
        "retransmits": (end.get("sum_sent") or {}).get("retransmits"),
    }


def _udp(lab: Lab, client: str, seconds: float, rate: int, reverse: bool) -> dict:
    extra = (*FAMILY, "-R") if reverse else FAMILY
    try:
        r = probes.iperf3(lab, client, CN, PORT, seconds, udp_rate=f"{rate}M", length=LENGTH, extra=extra)
    except LabError as e:
        return {"rate_mbps": rate, "error": str(e)}
    end = r.get("end", {})
    got = end.get("sum_received") or end.get("sum") or {}
    return {
        "rate_mbps": rate,
        "sent_mbps": (end.get("sum_sent") or {}).get("bits_per_second", 0) / 1e6,
        "received_mbps": got.get("bits_per_second", 0) / 1e6,
        "jitter_ms": got.get("jitter_ms"),
        "lost_percent": got.get("lost_percent"),
        "packets": got.get("packets"),
    }


def load_table(lab: Lab, client: str, seconds: float, reverse: bool, quick: bool = False) -> list[dict]:
    """The seed's rates, then doubling from EXTEND_FROM until loss > TABLE_LOSS %.

    quick: every other seed rate, then x4 steps up to 800 Mbit/s: the same shape in half the steps."""
    rows = []
    rates = list(SEED_RATES[::2] if quick else SEED_RATES)
    rate = EXTEND_FROM * 2 if quick else EXTEND_FROM
    i = 0
    while True:
        if i < len(rates):
            r = rates[i]
        else:
            r = rate
            rate *= 4 if quick else 2
        i += 1
        step = _udp(lab, client, seconds, r, reverse)
        rows.append(step)
        time.sleep(0.3)
        lost = step.get("lost_percent")
        if i > len(rates) and (lost is None or lost > TABLE_LOSS or r >= (800 if quick else EXTEND_MAX)):
            return rows


def _ping(lab: Lab, client: str) -> dict:
    done = lab.run(
        client,
        ["ping", *FAMILY, "-c", str(PING_COUNT), "-i", str(PING_INTERVAL), CN],
        timeout=PING_COUNT * PING_INTERVAL + 20,
    )
    times = [float(t) for t in re.findall(r"time=([\d.]+) ms", done.stdout)]
    return {
        "sent": PING_COUNT,
        "received": len(times),
        "median_ms": statistics.median(times) if times else None,
        "p99_ms": percentile(times, 99),
        "min_ms": min(times, default=None),
    }


def _dig(lab: Lab, host: str, name: str) -> dict:
    t0 = time.perf_counter()
    r = probes.dig(lab, host, name)
    r["wall_ms"] = (time.perf_counter() - t0) * 1000
    r["name"] = name
    return r


def _queries(lab: Lab, names: list[str]) -> list[dict]:
    done = lab.run(GN, [sys.executable, "-c", _DNS_SCRIPT, *names], timeout=60)
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return [{"name": n, "error": (done.stderr or done.stdout)[-300:]} for n in names]


def dns(lab: Lab) -> dict:
    """Cold queries (each name once: route selection for gn1), warm ones
    (cn, resolved and tunnelled), timed by gn1; then dig, the stock tool."""
    cold = [{**q, "query_ms": q.get("ms")} for q in _queries(lab, [f"{n}.cyphonic.test" for n in COLD_NAMES])]
    warm = [{**q, "query_ms": q.get("ms")} for q in _queries(lab, [CN] * WARM_REPEATS)]
    # dig's query time is whole milliseconds; its wall clock is mostly
    # `ip netns exec` + dig's start-up
    digs = [_dig(lab, GN, CN) for _ in range(WARM_REPEATS)]
    return {"cold": cold, "warm": warm, "dig_warm": digs}


def arp(lab: Lab) -> dict:
    vip = (lab.status(SERVER) or {}).get("vip4")
    src = lab.lease(GN)
    iface = general_nodes.client(lab, GN).ifname
    done = lab.run(GN, [sys.executable, "-c", _ARP_SCRIPT, iface, src or "0.0.0.0", vip, str(ARP_COUNT)], timeout=120)
    try:
        out = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": (done.stderr or done.stdout)[-500:], "target": vip}
    out["target"] = vip
    t = out["times_ms"]
    out["median_ms"] = statistics.median(t) if t else None
    out["p99_ms"] = percentile(t, 99)
    return out


def _timer_lists(st: dict | None) -> dict:
    """A node's timers (lists of ms) as count/p50/p99, like the adapter's."""
    out = {}
    for k, v in ((st or {}).get("timers") or {}).items():
        if isinstance(v, list):
            out[k] = {"count": len(v), "p50": percentile(v, 50), "p99": percentile(v, 99), "samples": v}
        else:
            out[k] = v
    return out


def stage(lab: Lab, mode: dict, result: dict) -> None:
    out = result["adapter"] = {
        "config": {
            "general_node": GN,
            "node": NODE,
            "target": CN,
            "port": PORT,
            "udp_length": LENGTH,
            "seed_rates_mbps": list(SEED_RATES),
            "table_loss_limit_pct": TABLE_LOSS,
            "udp_loss_limit_pct": UDP_LOSS,
            "cold_names": list(COLD_NAMES),
            "arp_count": ARP_COUNT,
            "goals": {k: f"{op} {b}" for k, (op, b) in GOALS.items()},
        }
    }
    server = apps.serve_iperf3(lab, SERVER, PORT)
    try:
        log("adapter: DNS cold/warm from gn1")
        out["dns"] = dns(lab)  # first: before gn1 contacts anything else
        log("adapter: ARP from gn1 (scapy)")
        out["arp"] = arp(lab)
        probes.wait_ping(lab, GN, CN, time.monotonic() + 20, FAMILY)
        probes.wait_ping(lab, NODE, CN, time.monotonic() + 20, FAMILY)
        reps = out["repetitions"] = []
        for i in range(mode["reps"]):
            log(f"adapter: repetition {i + 1}/{mode['reps']}: TCP and ping gn1, mn -> cn")
            order = (GN, NODE) if i % 2 == 0 else (NODE, GN)
            rep = {"order": list(order), "tcp": {}, "rtt": {}}
            for h in order:
                rep["tcp"][h] = _tcp(lab, h, mode["tcp_seconds"])
            for h in order:
                rep["rtt"][h] = _ping(lab, h)
            reps.append(rep)
        log(f"adapter: UDP search gn1 -> cn (< {UDP_LOSS}% loss)")
        out["udp_search"] = probes.udp_search(
            lab,
            GN,
            CN,
            PORT,
            mode["udp_seconds"],
            LENGTH,
            start_mbps=200,
            max_mbps=6400,
            refine=mode["refine"],
            loss_limit=UDP_LOSS,
            extra=FAMILY,
        )
        best = out["udp_search"].get("max_rate_mbps")
        if best:  # the jitter at that rate
            out["udp_search"]["at_max"] = _udp(lab, GN, mode["udp_seconds"], best, False)
        out["load_table"] = {}
        quick = bool(mode.get("quick"))
        for h in (GN, NODE):
            for direction, rev in (("up", False), ("down", True)):
                if quick and h == NODE and rev:
                    continue  # not one of the seed's three tables
                log(f"adapter: offered-load table {h} {'->' if not rev else '<-'} cn")
                out["load_table"][f"{h}_{direction}"] = load_table(lab, h, mode["udp_seconds"], rev, quick)
        out["timers"] = {"adapter": (lab.status("adapter") or {}).get("timers"), "node": _timer_lists(lab.status(NODE))}
        out["general_nodes"] = (lab.status("adapter") or {}).get("general_nodes")
    finally:
        apps.stop(server)
    from .adapter_report import _med, series  # it imports this module's constants

    s = series(result)
    log(
        f"  adapter: TCP gn1 {short(_med(s['gn_tcp_gbps']))} / mn {short(_med(s['node_tcp_gbps']))} Gbit/s, "
        f"UDP < 0.1% {short(best)} Mbit/s, RTT gn1 {short(_med(s['gn_rtt_ms']))} / mn "
        f"{short(_med(s['node_rtt_ms']))} ms, dig cold {short(_med(s['dns_cold_query_ms']))} ms, "
        f"ARP {short(_med(s['arp_gn_ms']))} ms"
    )
