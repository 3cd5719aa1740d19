"""The adapter stage's figures: the series and goals in the summary, and
its Markdown section (bench/adapter.py measures them)."""

from __future__ import annotations

import statistics

from .adapter import GN, GOALS, LENGTH, NODE, UDP_LOSS


def _med(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None


def series(result: dict) -> dict[str, list]:
    """The adapter's samples per metric (summary.py summarizes them)."""
    a = result.get("adapter") or {}
    reps = a.get("repetitions") or []
    s: dict[str, list] = {}

    def col(*keys):
        out = []
        for r in reps:
            for k in keys:
                r = r.get(k) if isinstance(r, dict) else None
            out.append(r)
        return out

    s["gn_tcp_gbps"] = col("tcp", GN, "gbps")
    s["node_tcp_gbps"] = col("tcp", NODE, "gbps")
    s["tcp_ratio"] = [
        g / n if g is not None and n else None for g, n in zip(s["gn_tcp_gbps"], s["node_tcp_gbps"], strict=True)
    ]
    s["gn_rtt_ms"] = col("rtt", GN, "median_ms")
    s["node_rtt_ms"] = col("rtt", NODE, "median_ms")
    u = a.get("udp_search") or {}
    s["udp_max_mbps"] = [u.get("max_rate_mbps")] if u else []
    s["udp_max_jitter_ms"] = [(u.get("at_max") or {}).get("jitter_ms")] if u else []
    d = a.get("dns") or {}
    s["dns_cold_query_ms"] = [x.get("query_ms") for x in d.get("cold", [])]
    s["dns_warm_query_ms"] = [x.get("query_ms") for x in d.get("warm", [])]
    s["dns_dig_warm_query_ms"] = [x.get("query_ms") for x in d.get("dig_warm", [])]
    s["dns_dig_warm_wall_ms"] = [x.get("wall_ms") for x in d.get("dig_warm", [])]
    s["arp_gn_ms"] = list((a.get("arp") or {}).get("times_ms") or [])
    return s


def goals(summ: dict) -> dict:
    out = {}
    a = summ
    for name, (op, bound) in GOALS.items():
        v = (a.get(name) or {}).get("median")
        out[name] = {
            "goal": f"{op} {bound}",
            "value": v,
            "met": None if v is None else (v >= bound if op == ">=" else v <= bound),
        }
    return out


def summarize(result: dict) -> None:
    """result["adapter"]["summary"] and ["goals"] from the samples (no-op without the stage)."""
    from .stats import summarize as summ

    a = result.get("adapter")
    if not a:
        return
    s = series(result)
    sm = {k: summ(v, "", k, percentiles=True) for k, v in s.items()}
    t = (a.get("timers") or {}).get("adapter") or {}
    sm["arp_adapter_p50_ms"] = {"median": (t.get("arp_ms") or {}).get("p50"), "n": (t.get("arp_ms") or {}).get("count")}
    a["summary"] = sm
    a["goals"] = goals(sm)


def _f(v, digits=3):
    from .stats import fmt

    return fmt(v) if isinstance(v, (int, float)) else "-"


def markdown(result: dict) -> list[str]:
    a = result.get("adapter")
    if not a:
        return []
    if "summary" not in a:
        summarize(result)
    sm, g = a["summary"], a["goals"]

    def med(k, stat="median"):
        return _f((sm.get(k) or {}).get(stat))

    def met(k):
        m = (g.get(k) or {}).get("met")
        return "-" if m is None else ("yes" if m else "**no**")

    n = (sm.get("gn_tcp_gbps") or {}).get("n", 0)
    lines = [
        "## CYPHONIC adapter: general node gn1 (behind `adapter`) vs node mn, both -> cn",
        "",
        f"TCP/RTT: median of {n} interleaved repetitions; UDP datagrams -l {LENGTH}. Seed = the seed paper's figure.",
        "",
        "| metric | general node gn1 | node mn | goal | met |",
        "|---|---:|---:|---|---|",
        f"| TCP -> cn, Gbit/s | {med('gn_tcp_gbps')} | {med('node_tcp_gbps')} "
        f"| gn1/mn {med('tcp_ratio')} >= 0.8 | {met('tcp_ratio')} |",
        f"| UDP -> cn, highest rate with < {UDP_LOSS}% loss, Mbit/s (jitter {med('udp_max_jitter_ms')} ms) "
        f"| {med('udp_max_mbps')} | | >= 300 | {met('udp_max_mbps')} |",
        f"| RTT ping -> cn, median ms | {med('gn_rtt_ms')} | {med('node_rtt_ms')} | | |",
        "| DNS cold (route selection seen by gn1: query to answer, timed on gn1), ms "
        f"| {med('dns_cold_query_ms')} (max {med('dns_cold_query_ms', 'max')}) | | <= 5 (seed 19.74) "
        f"| {met('dns_cold_query_ms')} |",
        "| DNS cold per name (gn3, v6, a1, b1 relayed; mn direct; cn reverse), ms | "
        + ", ".join(f"{q['name'].split('.')[0]} {_f(q.get('ms'))}" for q in (a.get("dns") or {}).get("cold", []))
        + " | | | |",
        f"| DNS warm (cn), ms | {med('dns_warm_query_ms')} | | | |",
        f"| DNS warm, dig's query time, ms (wall {med('dns_dig_warm_wall_ms')}) "
        f"| {med('dns_dig_warm_query_ms')} | | | |",
        f"| ARP who-has cn's vip seen by gn1 (scapy), median / p99 ms "
        f"| {med('arp_gn_ms')} / {med('arp_gn_ms', 'p99')} | | | |",
    ]
    t = a.get("timers") or {}
    ad, nd = t.get("adapter") or {}, t.get("node") or {}
    for key, label in (
        ("route_selection_ms", "route selection"),
        ("tunnel_establishment_ms", "tunnel establishment"),
        ("arp_ms", "ARP processing (read to reply built)"),
        ("arp_send_ms", "ARP reply send (veth: runs gn1's stack inline)"),
    ):
        x, y = ad.get(key) or {}, nd.get(key) or {}
        goal = "adapter p50 <= 0.05 (seed 0.32)" if key == "arp_ms" else ""
        m = met("arp_adapter_p50_ms") if key == "arp_ms" else ""
        lines.append(
            f"| daemon timer: {label}, p50 / p99 ms (n) "
            f"| {_f(x.get('p50'))} / {_f(x.get('p99'))} ({x.get('count', 0)}) "
            f"| {_f(y.get('p50'))} / {_f(y.get('p99'))} ({y.get('count', 0)}) | {goal} | {m} |"
        )
    lines += [
        "",
        "Offered load (UDP, iperf3 -b; up = client -> cn, down = cn -> client via -R): "
        "received Mbit/s / jitter ms / loss %",
        "",
        "| offered Mbit/s | gn1 up | gn1 down | mn up | mn down |",
        "|---:|---|---|---|---|",
    ]
    tables = a.get("load_table") or {}
    cols = [f"{GN}_up", f"{GN}_down", f"{NODE}_up", f"{NODE}_down"]
    rates = sorted({r["rate_mbps"] for c in cols for r in tables.get(c, [])})
    for rate in rates:
        cells = []
        for c in cols:
            r = next((r for r in tables.get(c, []) if r["rate_mbps"] == rate), None)
            if r is None:
                cells.append("")
            elif r.get("error"):
                cells.append("error")
            else:
                cells.append(f"{_f(r['received_mbps'])} / {_f(r['jitter_ms'])} / {_f(r['lost_percent'])}")
        lines.append(f"| {rate} | " + " | ".join(cells) + " |")
    return lines + [""]
