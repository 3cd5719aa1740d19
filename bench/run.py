"""CYPHONIC benchmark on the network-namespace lab.

    .venv/bin/python bench/run.py [--quick] [--out bench/results] [--prefix bench]
    .venv/bin/python -m bench.run ...   (same thing, from the repository root)

Brings a lab up under its own prefix, measures plain routing against the
overlay in interleaved repetitions (A B A B ...), restarts mn's node daemon
to sample route selection and tunnel establishment, tears the lab down
(always), and writes bench/results/<UTC stamp>.{json,md} and latest.{json,md}.
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
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cyphonic.lab import Lab, LabError, apps, down  # noqa: E402
from cyphonic.lab import netns  # noqa: E402

from bench import probes, report  # noqa: E402
from bench.stats import summarize  # noqa: E402

MN_GLOBAL = "198.51.100.10"  # mn's address on the "internet"; cn reaches it through its NAPT
CN = "cn.cyphonic.test"
PORT = 5201
V6_UDP_OVERHEAD = 48  # IPv6 (40) + UDP (8): -l = MTU - 48 fits one datagram in either family

MODES = {
    # reps: interleaved repetitions; refine: bisection steps of the UDP search
    "quick": dict(reps=3, tcp_seconds=2, udp_seconds=1, refine=2, restarts=5),
    "full": dict(reps=5, tcp_seconds=5, udp_seconds=3, refine=3, restarts=20),
}
PING_COUNT, PING_INTERVAL = 20, 0.05
UDP_OVERLAY = dict(start_mbps=200, max_mbps=4000)
UDP_PLAIN = dict(start_mbps=1000, max_mbps=16000)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _sigterm(signum, frame):  # noqa: ARG001
    raise SystemExit(128 + signum)  # unwinds through the finally that tears the lab down


def tun_info(lab: Lab, host: str) -> dict:
    st = lab.status(host) or {}
    tun = st.get("tun") or "cyph0"
    out = lab.run(host, ["ip", "-d", "link", "show", tun], timeout=10).stdout
    words = out.split()
    mtu = int(words[words.index("mtu") + 1]) if "mtu" in words else None
    vnet = words[words.index("vnet_hdr") + 1] if "vnet_hdr" in words else None
    return {"name": tun, "mtu": mtu, "vnet_hdr": vnet, "ip_link": out.strip()}


def measure(lab: Lab, mode: dict, result: dict) -> None:
    servers = []
    try:
        servers.append(apps.serve_iperf3(lab, "cn", PORT))  # overlay target
        servers.append(apps.serve_iperf3(lab, "mn", PORT))  # plain-routing target
        result["hosts"] = lab.show()["hosts"]
        tun = tun_info(lab, "mn")
        result["tun"] = tun
        length = (tun["mtu"] or 1420) - V6_UDP_OVERHEAD
        result["config"].update(tun_mtu=tun["mtu"], udp_length=length)

        log("warm-up: route selection, tunnel, one short run each way")
        result["warmup"] = {
            "dig": probes.dig(lab, "mn", CN),
            "ping": probes.ping_trial(lab, "mn", CN, 3, 0.2),
            "overlay_tcp": probes.tcp_trial(lab, "mn", CN, PORT, 1, ["mn", "cn"]),
            "plain_tcp": probes.tcp_trial(lab, "cn", MN_GLOBAL, PORT, 1, ["mn", "cn"]),
        }

        reps = result["samples"]["repetitions"]
        udp_start = {"overlay": UDP_OVERLAY["start_mbps"], "plain": UDP_PLAIN["start_mbps"]}
        for i in range(mode["reps"]):
            rep: dict = {"rep": i}
            reps.append(rep)
            log(f"repetition {i + 1}/{mode['reps']}: TCP plain, overlay")
            rep["plain_tcp"] = probes.tcp_trial(lab, "cn", MN_GLOBAL, PORT, mode["tcp_seconds"],
                                                ["mn", "cn"])
            rep["overlay_tcp"] = probes.tcp_trial(lab, "mn", CN, PORT, mode["tcp_seconds"],
                                                  ["mn", "cn"], counters=("mn", CN))
            log(f"repetition {i + 1}/{mode['reps']}: ping plain, overlay")
            rep["plain_rtt"] = probes.ping_trial(lab, "cn", MN_GLOBAL, PING_COUNT, PING_INTERVAL)
            rep["overlay_rtt"] = probes.ping_trial(lab, "mn", CN, PING_COUNT, PING_INTERVAL)
            log(f"repetition {i + 1}/{mode['reps']}: UDP search plain, overlay")
            for name, client, target, limits in (
                    ("plain", "cn", MN_GLOBAL, UDP_PLAIN), ("overlay", "mn", CN, UDP_OVERLAY)):
                r = probes.udp_search(lab, client, target, PORT, mode["udp_seconds"], length,
                                      start_mbps=udp_start[name], max_mbps=limits["max_mbps"],
                                      refine=mode["refine"])
                rep[f"{name}_udp"] = r
                # The next repetition starts its search where this one ended: fewer steps.
                if r.get("max_rate_mbps"):
                    udp_start[name] = r["max_rate_mbps"]
            o, p = rep["overlay_tcp"], rep["plain_tcp"]
            log(f"  TCP plain {p.get('gbps', 0):.2f} / overlay {o.get('gbps', 0):.3f} Gbit/s, "
                f"UDP overlay {rep['overlay_udp'].get('max_rate_mbps')} Mbit/s, "
                f"RTT {rep['plain_rtt'].get('avg_ms')} / {rep['overlay_rtt'].get('avg_ms')} ms")

        result["status_after_throughput"] = {h: _status_extract(lab.status(h)) for h in ("mn", "cn")}

        restarts = result["samples"]["restarts"]
        for i in range(mode["restarts"]):
            r = probes.restart_trial(lab, "mn", CN)
            restarts.append(r)
            log(f"restart {i + 1}/{mode['restarts']}: route {r.get('route_selection_ms')} ms, "
                f"tunnel {r.get('tunnel_establishment_ms')} ms, "
                f"dig {r.get('dns_first', {}).get('query_ms')} ms")
        result["status_at_end"] = {h: _status_extract(lab.status(h)) for h in ("mn", "cn")}
    finally:
        for proc in servers:
            apps.stop(proc)


def _status_extract(st: dict | None) -> dict | None:
    if st is None:
        return None
    return {k: st.get(k) for k in ("registered", "nat", "tun", "uptime", "peers", "drops", "timers")}


# -- summary -----------------------------------------------------------------------------


def _get(d: dict | None, *keys):
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def series(result: dict) -> dict[str, list]:
    """Every summarized metric as the list of samples it is computed from."""
    reps = result["samples"]["repetitions"]
    restarts = result["samples"]["restarts"]
    s: dict[str, list] = {}

    def col(*keys):
        return [_get(r, *keys) for r in reps]

    s["plain_tcp_gbps"] = col("plain_tcp", "gbps")
    s["overlay_tcp_gbps"] = col("overlay_tcp", "gbps")
    s["overlay_tcp_vs_plain_pct"] = [100 * o / p if o is not None and p else None
                                     for o, p in zip(s["overlay_tcp_gbps"], s["plain_tcp_gbps"])]
    s["overlay_tcp_retransmits"] = col("overlay_tcp", "retransmits")
    s["cpu_s_per_gbit"] = col("overlay_tcp", "cpu_s_per_gbit")
    for host in ("mn", "cn"):
        s[f"cpu_s_per_gbit_{host}"] = [
            c / g if c is not None and g else None
            for c, g in zip(col("overlay_tcp", "cpu", "daemon_cpu_s", host),
                            col("overlay_tcp", "gbit_received"))]
    s["daemon_cpu_pct"] = [100 * c / w if c is not None and w else None
                           for c, w in zip(col("overlay_tcp", "daemon_cpu_s_total"),
                                           col("overlay_tcp", "cpu", "wall_s"))]
    s["plain_tcp_daemon_cpu_s"] = col("plain_tcp", "daemon_cpu_s_total")
    for name in ("overlay", "plain"):
        s[f"{name}_udp_max_mbps"] = col(f"{name}_udp", "max_rate_mbps")
        s[f"{name}_udp_received_mbps"] = col(f"{name}_udp", "best_received_mbps")
    s["overlay_rtt_ms"] = col("overlay_rtt", "avg_ms")
    s["plain_rtt_ms"] = col("plain_rtt", "avg_ms")
    s["overlay_rtt_added_ms"] = [o - p if o is not None and p is not None else None
                                 for o, p in zip(s["overlay_rtt_ms"], s["plain_rtt_ms"])]
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


UNITS = {
    "plain_tcp_gbps": "Gbit/s", "overlay_tcp_gbps": "Gbit/s", "overlay_tcp_vs_plain_pct": "%",
    "overlay_tcp_retransmits": "segments", "cpu_s_per_gbit": "CPU-s/Gbit",
    "cpu_s_per_gbit_mn": "CPU-s/Gbit", "cpu_s_per_gbit_cn": "CPU-s/Gbit",
    "daemon_cpu_pct": "% of a core", "plain_tcp_daemon_cpu_s": "CPU-s",
    "overlay_udp_max_mbps": "Mbit/s", "overlay_udp_received_mbps": "Mbit/s",
    "plain_udp_max_mbps": "Mbit/s", "plain_udp_received_mbps": "Mbit/s",
    "overlay_rtt_ms": "ms", "plain_rtt_ms": "ms", "overlay_rtt_added_ms": "ms",
    "route_selection_ms": "ms", "tunnel_establishment_ms": "ms",
    "dns_first_query_ms": "ms", "dns_first_overhead_ms": "ms", "dns_cached_query_ms": "ms",
    "restart_to_registered_s": "s", "daemon_stop_s": "s",
}
PERCENTILES = {"route_selection_ms", "tunnel_establishment_ms", "dns_first_query_ms",
               "dns_first_overhead_ms",
               "dns_cached_query_ms", "restart_to_registered_s", "daemon_stop_s"}


def summary(s: dict[str, list]) -> dict:
    labels = dict(report.ROWS)
    return {k: summarize(v, UNITS[k], labels.get(k, k).strip(), percentiles=k in PERCENTILES)
            for k, v in s.items()}


def notes(result: dict) -> list[str]:
    """Things a reader should know to trust (or distrust) the table."""
    out = []
    env = result["environment"]
    if env["dirty_cyphonic"]:
        out.append("Measured the working tree, not exactly the commit: "
                   + ", ".join(env["dirty_cyphonic"]))
    idle = result.get("idle_wait")
    if idle and not idle["idle"]:
        out.append(f"The machine was {idle['busy_pct']}% busy at the start (waited {idle['waited_s']} s).")
    others = sorted(set(env.get("other_namespaces") or []) | set(env.get("other_namespaces_end") or []))
    if others:
        out.append(f"{len(others)} namespaces of other labs existed at the start or end of the run "
                   "(they share the CPUs): " + " ".join(others[:12]))
    tun = result.get("tun") or {}
    if tun.get("vnet_hdr") == "off":
        out.append(f"TUN {tun.get('name')} has vnet_hdr off: no GSO/TSO offloads "
                   "(DESIGN.md section 10), one read per packet.")
    reps = result["samples"]["repetitions"]
    fams = sorted({c["remote_host"] for r in reps
                   for c in _get(r, "overlay_tcp", "iperf3", "connected") or []})
    if fams:
        out.append(f"Overlay iperf3 connected to {', '.join(fams)} (name resolved by the node's resolver).")
        cn = (result.get("hosts") or {}).get("cn") or {}
        wrong = [a for a in fams if a not in (cn.get("vip4"), cn.get("vip6"))]
        if wrong:
            out.append(f"WARNING: overlay iperf3 reached {wrong}, not cn's virtual addresses "
                       f"({cn.get('vip4')}, {cn.get('vip6')}).")
    for name in ("overlay", "plain"):
        if any(_get(r, f"{name}_udp", "capped") for r in reps):
            out.append(f"UDP {name}: the search hit its cap without loss in some repetition; "
                       "the true limit is higher.")
        limited = [r["rep"] for r in reps if _get(r, f"{name}_udp", "sender_limited")]
        if limited:
            out.append(f"UDP {name}: iperf3 could not send the offered rate in repetition(s) "
                       f"{limited} (< 90% of -b): there the figure is iperf3's own ceiling, "
                       "not the path's.")
    errors = [f"rep {r['rep']} {k}: {v['error']}" for r in reps for k, v in r.items()
              if isinstance(v, dict) and "error" in v]
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
                   f"{len(result['samples']['restarts'])} restarts: cn's Tunnel Request reached mn "
                   "before mn knew the path, so it was dropped and only the retry got through.")
    for stage in ("status_after_throughput", "status_at_end"):
        for host, st in (result.get(stage) or {}).items():
            if st and st.get("drops"):
                out.append(f"{stage} {host} drop counters: {st['drops']}")
    return out


# -- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter runs (1-2 minutes)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                    help="directory for the result files (default bench/results)")
    ap.add_argument("--prefix", default="bench", help="lab prefix (default bench)")
    ap.add_argument("--reps", type=int, help="override the number of interleaved repetitions (>= 3)")
    ap.add_argument("--restarts", type=int, help="override the number of daemon restarts")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                    help="first wait up to SECONDS for the machine to be idle "
                         "(< 15%% CPU busy over 3 s); default: do not wait")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench: needs root (network namespaces)", file=sys.stderr)
        return 2

    mode = dict(MODES["quick" if args.quick else "full"])
    if args.reps is not None:
        mode["reps"] = max(3, args.reps)
    if args.restarts is not None:
        mode["restarts"] = max(1, args.restarts)
    idle = wait_idle(args.wait_idle) if args.wait_idle > 0 else None
    started = datetime.now(timezone.utc)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    env = report.environment()
    env["other_namespaces"] = [n for n in _namespaces() if not n.startswith(args.prefix + "-")]
    result: dict = {
        "started_utc": started.strftime("%Y-%m-%d %H:%M:%SZ"),
        "complete": False,
        "environment": env,
        "config": {"quick": args.quick, "prefix": args.prefix, "repetitions": mode["reps"],
                   "tcp_seconds": mode["tcp_seconds"], "udp_seconds": mode["udp_seconds"],
                   "udp_refine_steps": mode["refine"], "udp_loss_limit_pct": 1.0,
                   "udp_overlay": UDP_OVERLAY, "udp_plain": UDP_PLAIN,
                   "ping_count": PING_COUNT, "ping_interval": PING_INTERVAL,
                   "restarts": mode["restarts"]},
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
        measure(lab, mode, result)
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
