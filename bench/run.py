"""CYPHONIC benchmark on the network-namespace lab: plain routing vs Nebula vs CYPHONIC.

    .venv/bin/python bench/run.py [--quick] [--out bench/results] [--prefix bench]
    .venv/bin/python -m bench.run ...   (same thing, from the repository root)

Brings a lab up under its own prefix, starts Nebula (Debian's package) in the
same namespaces, measures A = plain routing, B = Nebula, C = CYPHONIC node to
node in interleaved repetitions (A B C A B C ...): TCP, TCP at 1% loss, the
highest UDP rate with <= 1% loss, idle RTT, CPU per Gbit of the tunnel
processes. Then (unless --restarts 0) restarts mn's node daemon to sample
route selection and tunnel establishment. Tears the lab down (always), and
writes bench/results/<UTC stamp>.{json,md} and latest.{json,md}.
What each figure means: bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cyphonic.lab import Lab, LabError, apps, down  # noqa: E402
from cyphonic.lab import netns  # noqa: E402
from cyphonic.lab.processes import log_tail  # noqa: E402

from bench import loss, nebula, probes, relay, report  # noqa: E402
from bench.stats import summarize  # noqa: E402

MN_GLOBAL = "198.51.100.10"  # mn's address on the "internet"; cn reaches it through its NAPT
CN = "cn.cyphonic.test"
MN = "mn.cyphonic.test"
PORT = 5201
UDP_IP_OVERHEAD = {4: 28, 6: 48}  # IP + UDP header: -l = inner MTU - this fills one packet
LOSS_FRACTION = 0.01
# A TCP run during which processes outside the lab (another session's tests, other
# labs) used more than --outside-limit % of a core is measured again, after waiting
# up to OUTSIDE_IDLE_WAIT s for an idle machine, at most OUTSIDE_RETRIES times.
OUTSIDE_LIMIT_PCT = 20.0
OUTSIDE_RETRIES = 2
OUTSIDE_IDLE_WAIT = 60.0

MODES = {
    # reps: interleaved repetitions; refine: bisection steps of the UDP search
    "quick": dict(reps=3, tcp_seconds=3, udp_seconds=1, refine=2, restarts=5),
    "full": dict(reps=5, tcp_seconds=5, udp_seconds=2, refine=3, restarts=20),
}
PING_COUNT, PING_INTERVAL = 20, 0.05
PATHS = ("plain", "nebula", "cyphonic")
# C/B goals of the issue "Data plane at kernel-offload speed": (comparison, bound)
GOALS = {"tcp": (">=", 3.0), "tcp_loss": (">=", 1.5), "udp": (">=", 1.0), "rtt": ("<=", 1.0)}
# Relayed (TRS) / direct (hole punched), a1 -> b1, same repetition: (comparison, bound)
RELAY_GOALS = {"tcp": (">=", 0.7)}
RELAY_KEYS = ("direct", "relayed", "v6cn")
RATIOS = {"tcp": "tcp_gbps", "tcp_loss": "tcp_loss_gbps", "udp": "udp_received_mbps",
          "rtt": "rtt_ms", "cpu": "cpu_s_per_gbit"}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _sigterm(signum, frame):  # noqa: ARG001
    raise SystemExit(128 + signum)  # unwinds through the finally that tears the lab down


def tun_info(lab: Lab, host: str, name: str | None = None) -> dict:
    if name is None:
        st = lab.status(host) or {}
        name = st.get("tun") or "cyph0"
    out = lab.run(host, ["ip", "-d", "link", "show", name], timeout=10).stdout
    words = out.split()
    mtu = int(words[words.index("mtu") + 1]) if "mtu" in words else None
    vnet = words[words.index("vnet_hdr") + 1] if "vnet_hdr" in words else None
    return {"name": name, "mtu": mtu, "vnet_hdr": vnet, "ip_link": out.strip()}


@dataclass
class DataPath:
    """One of A/B/C: who runs the iperf3 client and ping, against what.

    Every path carries the data mn -> cn, so a drop rule in cn's namespace
    (or cn's receiver hook) hits the data, not the ACKs. Plain routing cannot
    reach cn through its NAPT, so cn is the client there with iperf3 -R
    (mn's server sends).
    """

    key: str
    label: str
    client: str
    target: str
    iperf_extra: tuple[str, ...] = ()
    ping_extra: tuple[str, ...] = ()
    udp_start_mbps: int = 200
    udp_max_mbps: int = 4000
    pids_of: object = None  # Callable[[str], list[int]] | None: the tunnel processes of a host
    counters: tuple[str, str] | None = None
    udp_length: int = 0
    hosts: tuple[str, ...] = ("mn", "cn")  # whose tunnel processes the CPU meter reads
    links: list | None = None  # (host, device) byte counters; None: cn's cyph0 and neb0
    extra: dict = field(default_factory=dict)


def measure(lab: Lab, mode: dict, result: dict, family: int) -> None:
    servers = []
    neb = nebula.Nebula(lab)
    try:
        servers.append(apps.serve_iperf3(lab, "cn", PORT))  # B and C target
        servers.append(apps.serve_iperf3(lab, "mn", PORT))  # A: cn -R to mn's global address
        result["hosts"] = lab.show()["hosts"]
        tun = tun_info(lab, "mn")
        result["tun"] = tun

        log(f"nebula {nebula.version()}: CA, lighthouse in cloud, hosts in mn and cn")
        neb.setup()
        result["nebula"] = {"settings": neb.settings()}
        result["nebula"]["start"] = neb.start()
        result["nebula"]["tun"] = tun_info(lab, "mn", nebula.TUN)
        log(f"nebula up: mn reaches {neb.ip('cn')} after {result['nebula']['start']['mn_reaches_cn_s']} s")

        mtu = tun["mtu"] or 1400
        length = mtu - UDP_IP_OVERHEAD[family]
        fam = (f"-{family}",)
        paths = {
            "plain": DataPath("plain", "plain routing", "cn", MN_GLOBAL, iperf_extra=("-R",),
                              udp_start_mbps=1000, udp_max_mbps=16000,
                              # sanity: no tunnel process should work during plain runs
                              pids_of=lambda h: probes.daemon_pids(lab.ns(h))
                              + neb.pids().get(h, [])),
            "nebula": DataPath("nebula", f"Nebula {nebula.version()}", "mn", neb.ip("cn"),
                               pids_of=lambda h: neb.pids().get(h, [])),
            "cyphonic": DataPath("cyphonic", "CYPHONIC", "mn", CN, iperf_extra=fam,
                                 ping_extra=fam, counters=("mn", CN)),
        }
        for p in paths.values():
            p.udp_length = length
        result["config"].update(tun_mtu=tun["mtu"], nebula_mtu=result["nebula"]["tun"]["mtu"],
                                udp_length=length, cyphonic_family=family,
                                paths={k: {"client": p.client, "target": p.target,
                                           "iperf3_extra": list(p.iperf_extra),
                                           "ping_extra": list(p.ping_extra),
                                           "udp_start_mbps": p.udp_start_mbps,
                                           "udp_max_mbps": p.udp_max_mbps}
                                       for k, p in paths.items()})
        links = [("cn", tun["name"]), ("cn", nebula.TUN)]

        def tcp(p: DataPath, seconds: float) -> dict:
            """One TCP run; again (up to OUTSIDE_RETRIES times) if processes outside the
            lab took more than mode["outside_limit"] % of a core during it."""
            discarded = []
            while True:
                r = probes.tcp_trial(lab, p.client, p.target, PORT, seconds, list(p.hosts),
                                     counters=p.counters, extra=p.iperf_extra,
                                     pids_of=p.pids_of,
                                     links=links if p.links is None else p.links)
                outside = _get(r, "cpu", "outside_cpu_pct")
                limit = mode.get("outside_limit", 0)
                if not limit or outside is None or outside <= limit \
                        or len(discarded) >= OUTSIDE_RETRIES:
                    break
                top = ", ".join(f"{t['comm']} {t['cpu_s']}" for t in r["cpu"]["outside_top"][:3])
                log(f"  {p.key} TCP: processes outside the lab took {outside:.0f}% of a core "
                    f"({top}); waiting for idle and measuring again")
                discarded.append({k: r.get(k) for k in ("gbps", "retransmits", "error")}
                                 | {"outside_cpu_pct": outside,
                                    "outside_top": r["cpu"]["outside_top"]})
                wait_idle(OUTSIDE_IDLE_WAIT)
            if discarded:
                r["discarded_busy"] = discarded
            return r

        rpaths: dict[str, DataPath] = {}
        if mode.get("relay"):
            servers.append(apps.serve_iperf3(lab, "b1", PORT))  # direct and relayed a1 -> b1
            for key, (client, server, _, hosts) in relay.PAIRS.items():
                rpaths[key] = DataPath(key, f"CYPHONIC {client} -> {server} ({key})", client,
                                       relay.fqdn(server), iperf_extra=fam, ping_extra=fam,
                                       pids_of=relay.pids_of(lab), hosts=hosts, links=[],
                                       counters=(client, relay.fqdn(server)))
            result["relay"] = {"tun_mtu": relay.tun_mtus(lab),
                               "pairs": {k: {"client": p.client, "target": p.target,
                                             "path": relay.PAIRS[k][2]}
                                         for k, p in rpaths.items()}}

        log("warm-up: one dig, ping and 1 s TCP run per path")
        result["warmup"] = {"dig": probes.dig(lab, "mn", CN)}
        for p in paths.values():
            result["warmup"][p.key] = {
                "ping": probes.ping_trial(lab, p.client, p.target, 3, 0.2, p.ping_extra),
                "tcp": tcp(p, 1)}

        reps = result["samples"]["repetitions"]
        udp_start = {k: p.udp_start_mbps for k, p in paths.items()}
        n = mode["reps"]
        for i in range(n):
            rep: dict = {"rep": i, "tcp": {}, "rtt": {}, "udp": {}, "tcp_loss": {}}
            reps.append(rep)
            revive(lab, rep, fam, f"before repetition {i + 1}")
            if mode.get("wait_idle"):
                rep["idle_wait"] = wait_idle(mode["wait_idle"])
            log(f"repetition {i + 1}/{n}: TCP A B C")
            for p in paths.values():
                rep["tcp"][p.key] = tcp(p, mode["tcp_seconds"])
            log(f"repetition {i + 1}/{n}: ping A B C")
            for p in paths.values():
                rep["rtt"][p.key] = probes.ping_trial(lab, p.client, p.target, PING_COUNT,
                                                      PING_INTERVAL, p.ping_extra)
            log(f"repetition {i + 1}/{n}: UDP search A B C")
            for p in paths.values():
                r = probes.udp_search(lab, p.client, p.target, PORT, mode["udp_seconds"],
                                      p.udp_length, start_mbps=udp_start[p.key],
                                      max_mbps=p.udp_max_mbps, refine=mode["refine"],
                                      extra=p.iperf_extra)
                rep["udp"][p.key] = r
                # The next repetition starts its search where this one ended: fewer steps.
                if r.get("max_rate_mbps"):
                    udp_start[p.key] = r["max_rate_mbps"]
            log(f"repetition {i + 1}/{n}: TCP at {LOSS_FRACTION:.0%} loss A B C")
            tcp_at_loss(lab, paths, mode["tcp_seconds"], tcp, rep)
            if rpaths:
                log(f"repetition {i + 1}/{n}: relayed vs direct (a1 -> b1, v6 -> cn)")
                relay_phase(lab, rpaths, mode["tcp_seconds"], tcp, fam, rep)
            t, tl = rep["tcp"], rep["tcp_loss"]
            log("  " + " | ".join(
                f"{k}: TCP {_fmt(t[k].get('gbps'))} / lossy {_fmt(tl.get(k, {}).get('gbps'))} Gbit/s, "
                f"UDP {_fmt(rep['udp'][k].get('best_received_mbps'))} Mbit/s, "
                f"RTT {_fmt(rep['rtt'][k].get('avg_ms'))} ms" for k in PATHS))

        revive(lab, result.setdefault("after_repetitions", {}), fam, "after the repetitions")
        if rpaths:
            result["relay"]["trs_status_at_end"] = lab.status("trs")
        result["nebula"]["underlay"] = neb.underlay_paths()
        result["nebula"]["alive_at_end"] = neb.alive()
        result["status_after_throughput"] = {h: _status_extract(lab.status(h)) for h in ("mn", "cn")}
        # The restarts sample CYPHONIC alone, as before Nebula was added (a fresh
        # daemon would also announce neb0's address as one of its locators).
        neb.stop()

        restarts = result["samples"]["restarts"]
        for i in range(mode["restarts"]):
            r = probes.restart_trial(lab, "mn", CN)
            restarts.append(r)
            log(f"restart {i + 1}/{mode['restarts']}: route {r.get('route_selection_ms')} ms, "
                f"tunnel {r.get('tunnel_establishment_ms')} ms, "
                f"dig {r.get('dns_first', {}).get('query_ms')} ms")
        result["status_at_end"] = {h: _status_extract(lab.status(h)) for h in ("mn", "cn")}
    finally:
        neb.stop()
        for proc in servers:
            apps.stop(proc)
        # The daemons' last words, before `down` removes the logs.
        result["log_tails"] = {h: log_tail(lab.paths.log(h), 15) for h in ("mn", "cn")}
        if mode.get("relay"):
            result["log_tails"].update({h: log_tail(lab.paths.log(h), 10)
                                        for h in ("a1", "b1", "v6", "trs")})
        result["log_tails"].update({f"nebula-{h}": log_tail(neb.log(h), 5) for h in ("mn", "cn")})


def relay_phase(lab: Lab, rpaths: dict[str, DataPath], seconds: float, tcp,
                fam: tuple[str, ...], rep: dict) -> None:
    """Direct and relayed a1 -> b1 (one switch of a1's and b1's hole_punching) and v6 -> cn.

    The order alternates from one repetition to the next: the state the
    previous repetition left is measured first, then v6 -> cn, then the switch.
    """
    out = rep["relay"] = {}
    first = "direct" if relay.punching(lab) is not False else "relayed"
    second = "relayed" if first == "direct" else "direct"
    out["order"] = [first, "v6cn", second]

    def measure_one(key: str) -> None:
        p = rpaths[key]
        out[key] = relay.measure_pair(
            lab, key, lambda k: tcp(p, seconds),
            lambda k: probes.ping_trial(lab, p.client, p.target, PING_COUNT, PING_INTERVAL,
                                        p.ping_extra), fam)

    measure_one(first)
    measure_one("v6cn")
    try:
        out["switch"] = relay.switch(lab, relay.PUNCHED[second])
    except LabError as e:
        out["switch"] = {"error": str(e), "detail": getattr(e, "detail", None)}
        out[second] = {"error": f"restart of a1/b1 failed: {e}"}
    else:
        measure_one(second)
    log("  " + " | ".join(
        f"{k}: TCP {_fmt(_get(out, k, 'tcp', 'gbps'))} Gbit/s, "
        f"RTT {_fmt(_get(out, k, 'rtt', 'avg_ms'))} ms, "
        f"TRS {_fmt(_get(out, k, 'tcp', 'cpu', 'daemon_cpu_s', 'trs'))} CPU-s"
        for k in ("direct", "relayed", "v6cn")))


def revive(lab: Lab, record: dict, fam: tuple[str, ...], when: str) -> None:
    """If a node daemon has exited, keep its log tail and restart both (clean)."""
    dead = [h for h in ("mn", "cn") if lab.procs.get(h) is not None and lab.procs[h].poll() is not None]
    if not dead:
        return
    log(f"node daemon(s) {', '.join(dead)} exited {when}: restarting (log tail kept)")
    record["daemon_exit"] = {h: {"status": lab.procs[h].returncode,
                                 "log_tail": log_tail(lab.paths.log(h), 25)} for h in dead}
    record["daemon_exit"]["restart"] = loss.restart_cyphonic(lab, CN, None, fam)


def tcp_at_loss(lab: Lab, paths: dict[str, DataPath], seconds: float, tcp, rep: dict) -> None:
    """One TCP run per path with 1% of what cn receives dropped at random.

    Fills rep["tcp_loss"][path] and rep["cyphonic_loss_switch"] (cn's restarts).
    """
    out = rep["tcp_loss"]
    switch = rep["cyphonic_loss_switch"] = {}
    p = paths["plain"]
    with loss.NftLoss(lab, "cn", "meta l4proto tcp") as rule:
        r = tcp(p, seconds)
    r["loss"] = rule.result
    out["plain"] = r
    p = paths["nebula"]
    with loss.NftLoss(lab, "cn", f"udp dport {nebula.PORT}") as rule:
        r = tcp(p, seconds)
    r["loss"] = rule.result
    out["nebula"] = r

    p = paths["cyphonic"]
    try:
        try:
            switch["on"] = loss.restart_cyphonic(lab, CN, LOSS_FRACTION, p.ping_extra)
        except LabError as e:
            switch["on"] = {"error": str(e), "detail": getattr(e, "detail", None)}
            out["cyphonic"] = {"error": f"restart with the loss hook failed: {e}"}
        else:
            before = _hook_counts(lab)
            r = tcp(p, seconds)
            after = _hook_counts(lab)
            drops = after["hook_drops"] - before["hook_drops"]
            rx = (after["rx_packets"] - before["rx_packets"]
                  if after["rx_packets"] is not None and before["rx_packets"] is not None else None)
            r["loss"] = {"host": "cn", "hook": f"{loss.ENV}={LOSS_FRACTION}",
                         "env_seen_by_daemon": switch["on"].get("env_seen_by_daemon"),
                         "dropped_packets": drops, "delivered_packets": rx,
                         # cn's rx_packets for mn: what got past the hook (approximate
                         # when received datagrams are coalesced)
                         "drop_pct": 100 * drops / (drops + rx) if rx else None}
            out["cyphonic"] = r
    finally:
        # cn's daemon must lose nothing in the next repetition: restore, or stop the run.
        switch["off"] = loss.restart_cyphonic(lab, CN, None, p.ping_extra)


def _hook_counts(lab: Lab) -> dict:
    st = lab.status("cn") or {}
    rx = None
    for peer in st.get("peers", []):
        if peer.get("fqdn") == MN:
            rx = peer.get("rx_packets")
    return {"hook_drops": (st.get("drops") or {}).get("test loss hook", 0), "rx_packets": rx}


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def _status_extract(st: dict | None) -> dict | None:
    if st is None:
        return None
    return {k: st.get(k) for k in ("registered", "nat", "tun", "uptime", "peers", "drops", "timers",
                                   "offload", "dataplane")}


# -- summary -----------------------------------------------------------------------------


def _get(d: dict | None, *keys):
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _div(a, b):
    return a / b if a is not None and b else None


def series(result: dict) -> dict[str, list]:
    """Every summarized metric as the list of samples it is computed from."""
    reps = result["samples"]["repetitions"]
    restarts = result["samples"]["restarts"]
    s: dict[str, list] = {}

    def col(*keys):
        return [_get(r, *keys) for r in reps]

    for p in PATHS:
        s[f"{p}_tcp_gbps"] = col("tcp", p, "gbps")
        s[f"{p}_tcp_loss_gbps"] = col("tcp_loss", p, "gbps")
        s[f"{p}_udp_received_mbps"] = col("udp", p, "best_received_mbps")
        s[f"{p}_udp_max_mbps"] = col("udp", p, "max_rate_mbps")
        s[f"{p}_rtt_ms"] = col("rtt", p, "avg_ms")
        s[f"{p}_tcp_retransmits"] = col("tcp", p, "retransmits")
        s[f"{p}_tcp_loss_retransmits"] = col("tcp_loss", p, "retransmits")
        s[f"{p}_loss_applied_pct"] = col("tcp_loss", p, "loss", "drop_pct")
    for p in PATHS:
        s[f"{p}_tcp_outside_cpu_pct"] = col("tcp", p, "cpu", "outside_cpu_pct")
        s[f"{p}_tcp_busy_retries"] = [len(r["discarded_busy"]) if isinstance(r, dict)
                                      and r.get("discarded_busy") else 0
                                      for r in col("tcp", p)]
    for p in ("nebula", "cyphonic"):
        s[f"{p}_cpu_s_per_gbit"] = col("tcp", p, "cpu_s_per_gbit")
        for host in ("mn", "cn"):
            s[f"{p}_cpu_s_per_gbit_{host}"] = [
                _div(c, g) for c, g in zip(col("tcp", p, "cpu", "daemon_cpu_s", host),
                                           col("tcp", p, "gbit_received"))]
        s[f"{p}_cpu_pct"] = [100 * c / w if c is not None and w else None
                             for c, w in zip(col("tcp", p, "daemon_cpu_s_total"),
                                             col("tcp", p, "cpu", "wall_s"))]
        s[f"{p}_tcp_loss_cpu_s_per_gbit"] = col("tcp_loss", p, "cpu_s_per_gbit")
        s[f"{p}_tcp_vs_plain_pct"] = [100 * x if x is not None else None for x in
                                      map(_div, s[f"{p}_tcp_gbps"], s["plain_tcp_gbps"])]
        s[f"{p}_rtt_added_ms"] = [o - a if o is not None and a is not None else None
                                  for o, a in zip(s[f"{p}_rtt_ms"], s["plain_rtt_ms"])]
    s["plain_tcp_tunnel_cpu_s"] = col("tcp", "plain", "daemon_cpu_s_total")
    for name, metric in RATIOS.items():
        s[f"c_vs_b_{name}"] = list(map(_div, s[f"cyphonic_{metric}"], s[f"nebula_{metric}"]))
    s["cyphonic_loss_switch_s"] = [_get(r, "cyphonic_loss_switch", w, "to_ping_s")
                                   for r in reps for w in ("on", "off")]

    def rcol(k, *keys):
        # a run whose path was wrong or changed carries "error": not a sample
        return [None if isinstance(_get(r, "relay", k, keys[0]), dict)
                and "error" in _get(r, "relay", k, keys[0]) else _get(r, "relay", k, *keys)
                for r in reps]

    if any(r.get("relay") for r in reps):
        for k in RELAY_KEYS:
            s[f"relay_{k}_tcp_gbps"] = rcol(k, "tcp", "gbps")
            s[f"relay_{k}_rtt_ms"] = rcol(k, "rtt", "avg_ms")
            s[f"relay_{k}_tcp_retransmits"] = rcol(k, "tcp", "retransmits")
            gbit = rcol(k, "tcp", "gbit_received")
            s[f"relay_{k}_cpu_s_per_gbit"] = rcol(k, "tcp", "cpu_s_per_gbit")
            s[f"relay_{k}_trs_cpu_s_per_gbit"] = list(map(
                _div, rcol(k, "tcp", "cpu", "daemon_cpu_s", "trs"), gbit))
            s[f"relay_{k}_trs_cpu_pct"] = [
                100 * c / w if c is not None and w else None
                for c, w in zip(rcol(k, "tcp", "cpu", "daemon_cpu_s", "trs"),
                                rcol(k, "tcp", "cpu", "wall_s"))]
            s[f"relay_{k}_tcp_outside_cpu_pct"] = rcol(k, "tcp", "cpu", "outside_cpu_pct")
        for m in ("tcp_gbps", "rtt_ms"):
            name = m.split("_")[0]
            s[f"relay_ratio_{name}"] = list(map(_div, s[f"relay_relayed_{m}"],
                                                s[f"relay_direct_{m}"]))
            s[f"relay_ratio_v6cn_{name}"] = list(map(_div, s[f"relay_v6cn_{m}"],
                                                     s[f"relay_direct_{m}"]))
        s["relay_switch_s"] = [_get(r, "relay", "switch", "to_registered_s") for r in reps]
        s["relay_punch_s"] = [
            next((t for t, path in _get(r, "relay", "direct", "path_check", "path_changes") or []
                  if path == "direct"), None) for r in reps]

    s["route_selection_ms"] = [x for r in restarts for x in r.get("route_selection_ms", [])]
    s["tunnel_establishment_ms"] = [x for r in restarts for x in r.get("tunnel_establishment_ms", [])]
    s["dns_first_query_ms"] = [_get(r, "dns_first", "query_ms") for r in restarts]
    s["dns_first_overhead_ms"] = [
        _get(r, "dns_first", "query_ms") - sum(r["route_selection_ms"]) - sum(r["tunnel_establishment_ms"])
        if _get(r, "dns_first", "query_ms") is not None and r.get("route_selection_ms")
        and r.get("tunnel_establishment_ms") else None
        for r in restarts]
    s["dns_cached_query_ms"] = [_get(r, "dns_second", "query_ms") for r in restarts]
    s["restart_to_registered_s"] = [r.get("start_to_registered_s") for r in restarts]
    s["daemon_stop_s"] = [r.get("stop_s") for r in restarts]
    return s


PERCENTILES = {"route_selection_ms", "tunnel_establishment_ms", "dns_first_query_ms",
               "dns_first_overhead_ms", "dns_cached_query_ms", "restart_to_registered_s",
               "daemon_stop_s"}


def unit(key: str) -> str:
    if key.startswith("c_vs_b_"):
        return "x (C/B)"
    if key.startswith("relay_ratio_"):
        return "x (relayed/direct)"
    for suffix, u in (("_gbps", "Gbit/s"), ("_mbps", "Mbit/s"), ("_ms", "ms"),
                      ("retransmits", "segments"), ("_retries", "runs"), ("cpu_s_per_gbit", "CPU-s/Gbit"),
                      ("cpu_s_per_gbit_mn", "CPU-s/Gbit"), ("cpu_s_per_gbit_cn", "CPU-s/Gbit"),
                      ("_cpu_pct", "% of a core"), ("_pct", "%"), ("_cpu_s", "CPU-s"), ("_s", "s")):
        if key.endswith(suffix):
            return u
    return ""


def summary(s: dict[str, list]) -> dict:
    labels = report.labels()
    return {k: summarize(v, unit(k), labels.get(k, k).strip(), percentiles=k in PERCENTILES)
            for k, v in s.items()}


def goals(summ: dict) -> dict:
    out = {}
    for name, (op, bound) in GOALS.items():
        med = (summ.get(f"c_vs_b_{name}") or {}).get("median")
        met = None if med is None else (med >= bound if op == ">=" else med <= bound)
        out[name] = {"goal": f"{op} {bound}", "median": med, "met": met,
                     "min": (summ.get(f"c_vs_b_{name}") or {}).get("min"),
                     "max": (summ.get(f"c_vs_b_{name}") or {}).get("max")}
    for name, (op, bound) in RELAY_GOALS.items():
        s = summ.get(f"relay_ratio_{name}") or {}
        med = s.get("median")
        out[f"relay_{name}"] = {
            "goal": f"relayed/direct {op} {bound}", "median": med,
            "met": None if med is None else (med >= bound if op == ">=" else med <= bound),
            "min": s.get("min"), "max": s.get("max")}
    return out


def notes(result: dict) -> list[str]:
    """Things a reader should know to trust (or distrust) the table."""
    out = []
    env = result["environment"]
    if env["dirty_cyphonic"]:
        out.append("Measured the working tree, not exactly the commit: "
                   + ", ".join(env["dirty_cyphonic"]))
    if env.get("inherited_loss_env"):
        out.append(f"{loss.ENV}={env['inherited_loss_env']} was set in the bench's environment; "
                   "removed so that only the lossy cn daemon gets it.")
    idle = result.get("idle_wait")
    if idle and not idle["idle"]:
        out.append(f"The machine was {idle['busy_pct']}% busy at the start (waited {idle['waited_s']} s).")
    others = sorted(set(env.get("other_namespaces") or []) | set(env.get("other_namespaces_end") or []))
    if others:
        out.append(f"{len(others)} namespaces of other labs existed at the start or end of the run "
                   "(they share the CPUs): " + " ".join(others[:12]))
    reps = result["samples"]["repetitions"]
    busy = []
    retried = []
    limit = result["config"].get("outside_limit_pct")
    for r in reps:
        for section in ("tcp", "tcp_loss"):
            for k, v in (r.get(section) or {}).items():
                if not isinstance(v, dict):
                    continue
                pct = _get(v, "cpu", "outside_cpu_pct")
                if pct is not None and pct > (limit or OUTSIDE_LIMIT_PCT):
                    top = ", ".join(t["comm"] for t in v["cpu"]["outside_top"][:3])
                    busy.append(f"rep {r['rep']} {section} {k} {pct:.0f}% ({top})")
                if v.get("discarded_busy"):
                    retried.append(f"rep {r['rep']} {section} {k} "
                                   + "/".join(f"{_fmt(d.get('gbps'))} Gbit/s at "
                                              f"{d['outside_cpu_pct']:.0f}%"
                                              for d in v["discarded_busy"]))
    if retried:
        out.append("TCP runs measured again because processes outside the lab took more than "
                   f"{_fmt(limit)}% of a core (discarded figures): " + "; ".join(retried))
    if busy:
        out.append("WARNING: in these kept TCP runs processes outside the lab used CPU (% of a "
                   "core; the tunnel processes lose about that share): " + "; ".join(busy))
    tun = result.get("tun") or {}
    if tun.get("vnet_hdr") == "off":
        out.append(f"TUN {tun.get('name')} has vnet_hdr off: no GSO/TSO offloads "
                   "(DESIGN.md section 10), one read per packet.")
    elif tun.get("vnet_hdr") == "on":
        out.append(f"TUN {tun.get('name')} has vnet_hdr on (offloads).")
    cfg = result["config"]
    if cfg.get("nebula_mtu") and cfg.get("tun_mtu") and cfg["nebula_mtu"] != cfg["tun_mtu"]:
        out.append(f"MTUs differ: {tun.get('name')} {cfg['tun_mtu']}, Nebula {cfg['nebula_mtu']}.")
    neb = result.get("nebula") or {}
    if neb.get("settings"):
        st = neb["settings"]
        out.append(f"Nebula {st['version']}: tun.mtu {st['mtu']} (Nebula's default is 1300; set to "
                   f"match cyph0), listen.read_buffer/write_buffer {st['read_buffer'] >> 20} MiB "
                   "(as the CYPHONIC node's sockets; the kernel default overflows), cipher "
                   "aes (default), underlay used between mn and cn: "
                   + (", ".join(sorted(set(neb.get("underlay") or []))) or "not seen in the logs"))
    if not env.get("loss_hook_files"):
        out.append(f"The loss hook was ABSENT: nothing under cyphonic/ mentions {loss.ENV}. cn's "
                   "daemon was restarted with it anyway; 'C at 1% loss' ran without loss.")
    applied = {p: [_get(r, "tcp_loss", p, "loss", "drop_pct") for r in reps] for p in PATHS}
    out.append("Loss actually applied during the lossy TCP runs (% of what cn received): "
               + "; ".join(f"{p} " + ", ".join(_fmt(x) for x in v) for p, v in applied.items()))
    if any(_get(r, "tcp_loss", "cyphonic", "loss", "dropped_packets") == 0 for r in reps):
        out.append("WARNING: cn's daemon counted no 'test loss hook' drops in some lossy CYPHONIC "
                   "run: the hook did not act.")
    ons = [_get(r, "cyphonic_loss_switch", "on") for r in reps]
    if any(on and "error" not in on and on.get("env_seen_by_daemon") is None for on in ons):
        out.append(f"WARNING: cn's lossy daemon did not have {loss.ENV} in its environment "
                   "in some repetition.")
    big = [_get(r, "tcp_loss", "plain", "loss", "avg_packet_bytes") for r in reps]
    if any(b and b > 2000 for b in big):
        out.append("Plain routing at 1% loss: the nft rule sees GRO/GSO aggregates (avg "
                   + ", ".join(_fmt(b) for b in big) + " bytes per packet), so it drops 1% of "
                   "aggregates, bursts of wire segments. A reference figure only.")
    # Crosstalk: traffic of one tunnel must not cross the other's device.
    for p, other in (("nebula", tun.get("name") or "cyph0"), ("cyphonic", nebula.TUN)):
        moved = [_get(r, "tcp", p, "link_bytes", f"cn/{other}", "rx") for r in reps]
        if any(m and m > 1_000_000 for m in moved):
            out.append(f"WARNING: during {p} TCP runs cn's {other} received {moved} bytes: "
                       "one tunnel ran inside the other.")
    fams = sorted({c["remote_host"] for r in reps
                   for c in _get(r, "tcp", "cyphonic", "iperf3", "connected") or []})
    if fams:
        out.append(f"CYPHONIC iperf3 connected to {', '.join(fams)} (name resolved by the "
                   f"node's resolver, iperf3 -{cfg.get('cyphonic_family')}).")
        cn = (result.get("hosts") or {}).get("cn") or {}
        wrong = [a for a in fams if a not in (cn.get("vip4"), cn.get("vip6"))]
        if wrong:
            out.append(f"WARNING: CYPHONIC iperf3 reached {wrong}, not cn's virtual addresses "
                       f"({cn.get('vip4')}, {cn.get('vip6')}).")
    endpoints = sorted({pp.get("endpoint") or "?" for r in reps
                        for w in ("on", "off")
                        for pp in _get(r, "cyphonic_loss_switch", w, "mn_peers") or []})
    if endpoints:
        out.append("After each restart for the loss hook, mn's tunnel to cn used the endpoint(s) "
                   + ", ".join(endpoints)
                   + (" - WARNING: a Nebula address" if any(e.startswith(nebula.SUBNET + ".")
                                                           for e in endpoints) else ""))
    for key in PATHS:
        if any(_get(r, "udp", key, "capped") for r in reps):
            out.append(f"UDP {key}: the search hit its cap without loss in some repetition; "
                       "the true limit is higher.")
        limited = [r["rep"] for r in reps if _get(r, "udp", key, "sender_limited")]
        if limited:
            out.append(f"UDP {key}: iperf3 could not send the offered rate in repetition(s) "
                       f"{limited} (< 90% of -b): there the figure is iperf3's own ceiling, "
                       "not the path's.")
    exits = [(r["rep"], sorted(k for k in r["daemon_exit"] if k != "restart"))
             for r in reps if r.get("daemon_exit")]
    if (result.get("after_repetitions") or {}).get("daemon_exit"):
        exits.append(("end", sorted(k for k in result["after_repetitions"]["daemon_exit"]
                                    if k != "restart")))
    if exits:
        out.append("WARNING: node daemon(s) had exited and were restarted (before repetition / "
                   "hosts): " + "; ".join(f"{r} {h}" for r, h in exits)
                   + ". Their log tails are in the JSON (daemon_exit).")
    rel = result.get("relay") or {}
    if rel:
        out.append("Relay: TUN MTUs " + ", ".join(f"{h} {m}" for h, m in
                                                    (rel.get("tun_mtu") or {}).items())
                   + "; a1/b1 daemons restarted once per repetition with hole_punching "
                   "flipped (order alternates).")
        frag = [f"rep {r['rep']} {k}: {_get(r, 'relay', k, 'fragmentation')}"
                for r in reps for k in RELAY_KEYS if _get(r, "relay", k, "fragmentation")]
        if frag:
            out.append("WARNING: IP fragmentation/reassembly during relay-phase TCP runs "
                       "(the outer datagrams exceed a link MTU): " + "; ".join(frag))
        else:
            out.append("No IP fragmentation counted (a1, b1, v6, cn, trs, inet) during the "
                       "relay-phase TCP runs.")
        eps = sorted({f"{k} {_get(r, 'relay', k, 'path_check', 'path')} "
                      f"{_get(r, 'relay', k, 'path_check', 'endpoint')}"
                      for r in reps for k in RELAY_KEYS if _get(r, "relay", k, "path_check")})
        out.append("Relay-phase paths checked before each run (pair, path, endpoint): "
                   + "; ".join(eps))
    errors = []
    for r in reps:
        for k in RELAY_KEYS:
            for sec in ("", "tcp", "rtt"):
                v = _get(r, "relay", k, sec) if sec else _get(r, "relay", k)
                if isinstance(v, dict) and "error" in v:
                    errors.append(f"rep {r['rep']} relay {k} {sec}: {v['error']}")
        if isinstance(_get(r, "relay", "switch"), dict) and "error" in r["relay"]["switch"]:
            errors.append(f"rep {r['rep']} relay switch: {r['relay']['switch']['error']}")
    for r in reps:
        for section in ("tcp", "rtt", "udp", "tcp_loss", "cyphonic_loss_switch"):
            for k, v in (r.get(section) or {}).items():
                if isinstance(v, dict) and "error" in v:
                    errors.append(f"rep {r['rep']} {section} {k}: {v['error']}")
    errors += [f"restart {i}: {r['error']}" for i, r in enumerate(result["samples"]["restarts"])
               if "error" in r]
    if errors:
        out.append("Failed samples (left out of the summary): " + "; ".join(errors[:10]))
    tunnels = result["series"].get("tunnel_establishment_ms", [])
    slow = [t for t in tunnels if t >= 250]
    if slow:
        drops = sum(1 for r in result["samples"]["restarts"]
                    if "tunnel request on an unannounced path" in (r.get("drops") or {}))
        out.append(f"{len(slow)} of {len(tunnels)} tunnel establishments took >= 250 ms "
                   f"(min of those {min(slow):.0f} ms): the signaling retransmits after 300 ms. "
                   f"mn counted 'tunnel request on an unannounced path' after {drops} of "
                   f"{len(result['samples']['restarts'])} restarts.")
    for stage in ("status_after_throughput", "status_at_end"):
        for host, st in (result.get(stage) or {}).items():
            if st and st.get("drops"):
                out.append(f"{stage} {host} drop counters: {st['drops']}")
    return out


# -- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter runs (~2.5 minutes)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                    help="directory for the result files (default bench/results)")
    ap.add_argument("--prefix", default="bench", help="lab prefix (default bench)")
    ap.add_argument("--reps", type=int, help="override the number of interleaved repetitions (>= 3)")
    ap.add_argument("--restarts", type=int,
                    help="override the number of daemon restarts (0: skip the timers part)")
    ap.add_argument("--no-restarts", action="store_true", help="same as --restarts 0")
    ap.add_argument("--no-relay", action="store_true",
                    help="skip the relayed (TRS) vs direct (hole punched) measurements")
    ap.add_argument("--family", type=int, choices=(4, 6), default=4,
                    help="address family CYPHONIC's iperf3/ping use for cn.cyphonic.test "
                         "(default 4, like Nebula's overlay)")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                    help="first, and before every repetition, wait up to SECONDS for the "
                         "machine to be idle (< 15%% CPU busy over 3 s); default: do not wait")
    ap.add_argument("--outside-limit", type=float, default=OUTSIDE_LIMIT_PCT, metavar="PCT",
                    help="measure a TCP run again if processes outside the lab used more "
                         f"than PCT %% of a core during it (default {OUTSIDE_LIMIT_PCT:g}; "
                         "0: never)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench: needs root (network namespaces)", file=sys.stderr)
        return 2
    if not nebula.version():
        print("bench: needs nebula and nebula-cert (apt-get install nebula)", file=sys.stderr)
        return 2

    mode = dict(MODES["quick" if args.quick else "full"])
    if args.reps is not None:
        mode["reps"] = max(3, args.reps)
    if args.restarts is not None:
        mode["restarts"] = max(0, args.restarts)
    if args.no_restarts:
        mode["restarts"] = 0
    mode["outside_limit"] = max(0.0, args.outside_limit)
    mode["wait_idle"] = args.wait_idle
    mode["relay"] = not args.no_relay
    idle = wait_idle(args.wait_idle) if args.wait_idle > 0 else None
    started = datetime.now(timezone.utc)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    env = report.environment()
    env["other_namespaces"] = [n for n in _namespaces() if not n.startswith(args.prefix + "-")]
    env["nebula"] = nebula.version()
    env["loss_hook_files"] = loss.hook_in_source()
    # Only the lossy cn daemon may see the loss variable; the lab passes ours on.
    env["inherited_loss_env"] = os.environ.pop(loss.ENV, None)
    result: dict = {
        "started_utc": started.strftime("%Y-%m-%d %H:%M:%SZ"),
        "complete": False,
        "environment": env,
        "config": {"quick": args.quick, "prefix": args.prefix, "repetitions": mode["reps"],
                   "tcp_seconds": mode["tcp_seconds"], "udp_seconds": mode["udp_seconds"],
                   "udp_refine_steps": mode["refine"], "udp_loss_limit_pct": 1.0,
                   "loss_fraction": LOSS_FRACTION,
                   "ping_count": PING_COUNT, "ping_interval": PING_INTERVAL,
                   "restarts": mode["restarts"], "relay": mode["relay"],
                   "relay_goals": {k: f"relayed/direct {op} {b}"
                                   for k, (op, b) in RELAY_GOALS.items()},
                   "outside_limit_pct": mode["outside_limit"],
                   "wait_idle_s": mode["wait_idle"], "goals": {k: f"C/B {op} {b}"
                                                           for k, (op, b) in GOALS.items()}},
        "loadavg_before": report.loadavg(),
        "idle_wait": idle,
        "samples": {"repetitions": [], "restarts": []},
    }
    signal.signal(signal.SIGTERM, _sigterm)
    t0 = time.monotonic()
    lab = Lab(args.prefix)
    rc = 0
    try:
        if netns.list_namespaces(args.prefix):
            log(f"removing a stale lab with prefix {args.prefix!r}")
            down(args.prefix)
        log(f"lab up (prefix {args.prefix})")
        lab.up(timeout=30)
        measure(lab, mode, result, args.family)
        result["complete"] = True
    except BaseException as e:  # noqa: BLE001 - keep what was measured, whatever stopped us
        result["error"] = f"{type(e).__name__}: {e}"
        detail = getattr(e, "detail", None)
        if detail:
            result["error_detail"] = detail
        result["traceback"] = traceback.format_exc()
        log(f"aborted: {result['error']}")
        rc = 1
    finally:
        log("lab down")
        removed = down(args.prefix)
        result["teardown_removed"] = removed
    result["duration_s"] = time.monotonic() - t0
    result["loadavg_after"] = report.loadavg()
    env["other_namespaces_end"] = [n for n in _namespaces() if not n.startswith(args.prefix + "-")]
    result["series"] = series(result)
    result["summary"] = summary(result["series"])
    result["goals"] = goals(result["summary"])
    result["notes"] = notes(result)
    written = report.write(result, args.out, stamp, latest=result["complete"])
    print(report.markdown(result))
    log("wrote " + ", ".join(str(p) for p in written))
    return rc


def wait_idle(limit: float, threshold: float = 15.0, window: float = 3.0) -> dict:
    """Wait until the whole machine is < `threshold` % busy over `window` s, up to `limit` s."""
    t0 = time.monotonic()
    while True:
        b0, n0 = probes.host_cpu()
        time.sleep(window)
        b1, n1 = probes.host_cpu()
        busy = 100 * (b1 - b0) / (n1 - n0) if n1 > n0 else 0.0
        waited = time.monotonic() - t0
        if busy < threshold or waited >= limit:
            if busy >= threshold:
                log(f"machine still {busy:.0f}% busy after {waited:.0f} s; measuring anyway")
            return {"waited_s": round(waited, 1), "busy_pct": round(busy, 1),
                    "idle": busy < threshold}
        log(f"machine {busy:.0f}% busy (other labs?); waiting")


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


if __name__ == "__main__":
    sys.exit(main())
