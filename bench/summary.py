"""From the raw samples to the figures: series, summary, goals.

`series` lists, for every metric, the exact samples it is computed from
(one per repetition or restart; None for a failed one); `summary` gives each
its median, min, max, n (p50 and p99 for the per-restart timers); `goals`
compares the C/B and relayed/direct medians with the issue's goals.
"""

from __future__ import annotations

from . import adapter_report, report
from .datapaths import PATHS, TUNNELS
from .stats import dig, ratio, summarize

# C/B goals of the issue "Data plane at kernel-offload speed": (comparison, bound)
GOALS = {"tcp": (">=", 3.0), "tcp_loss": (">=", 1.5), "udp": (">=", 1.0), "rtt": ("<=", 1.0)}
# Relayed (TRS) / direct (hole punched), a1 -> b1, same repetition: (comparison, bound)
RELAY_GOALS = {"tcp": (">=", 0.7)}
RELAY_KEYS = ("direct", "relayed", "v6cn", "nebula_direct", "nebula_relayed")
RATIOS = {
    "tcp": "tcp_gbps",
    "tcp_loss": "tcp_loss_gbps",
    "udp": "udp_received_mbps",
    "rtt": "rtt_ms",
    "cpu": "cpu_s_per_gbit",
}


def series(result: dict) -> dict[str, list]:
    """Every summarized metric as the list of samples it is computed from."""
    reps = result["samples"]["repetitions"]
    s = _abc_series(reps)
    if any(r.get("relay") for r in reps):
        s.update(_relay_series(reps))
    s.update(_restart_series(result["samples"]["restarts"]))
    s.update({f"adapter_{k}": v for k, v in adapter_report.series(result).items() if result.get("adapter")})
    return s


def _abc_series(reps: list[dict]) -> dict[str, list]:
    """A/B/C per repetition: rates, RTT, retransmits, loss applied, CPU, C/B ratios."""
    s: dict[str, list] = {}

    def col(*keys):
        return [dig(r, *keys) for r in reps]

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
        s[f"{p}_tcp_busy_retries"] = [
            len(r["discarded_busy"]) if isinstance(r, dict) and r.get("discarded_busy") else 0 for r in col("tcp", p)
        ]
    for p in TUNNELS:
        s[f"{p}_cpu_s_per_gbit"] = col("tcp", p, "cpu_s_per_gbit")
        for host in ("mn", "cn"):
            s[f"{p}_cpu_s_per_gbit_{host}"] = [
                ratio(c, g)
                for c, g in zip(col("tcp", p, "cpu", "daemon_cpu_s", host), col("tcp", p, "gbit_received"), strict=True)
            ]
        s[f"{p}_cpu_pct"] = [
            100 * c / w if c is not None and w else None
            for c, w in zip(col("tcp", p, "daemon_cpu_s_total"), col("tcp", p, "cpu", "wall_s"), strict=True)
        ]
        s[f"{p}_tcp_loss_cpu_s_per_gbit"] = col("tcp_loss", p, "cpu_s_per_gbit")
        s[f"{p}_tcp_vs_plain_pct"] = [
            100 * x if x is not None else None for x in map(ratio, s[f"{p}_tcp_gbps"], s["plain_tcp_gbps"])
        ]
        s[f"{p}_rtt_added_ms"] = [
            o - a if o is not None and a is not None else None
            for o, a in zip(s[f"{p}_rtt_ms"], s["plain_rtt_ms"], strict=True)
        ]
    s["plain_tcp_tunnel_cpu_s"] = col("tcp", "plain", "daemon_cpu_s_total")
    for name, metric in RATIOS.items():
        s[f"c_vs_b_{name}"] = list(map(ratio, s[f"cyphonic_{metric}"], s[f"nebula_{metric}"]))
        for p in TUNNELS[1:]:  # every system against Nebula, same repetition
            s[f"{p}_vs_nebula_{name}"] = list(map(ratio, s[f"{p}_{metric}"], s[f"nebula_{metric}"]))
    s["cyphonic_loss_switch_s"] = [dig(r, "cyphonic_loss_switch", w, "to_ping_s") for r in reps for w in ("on", "off")]
    return s


def _relay_series(reps: list[dict]) -> dict[str, list]:
    """Relayed vs direct per repetition: each pair's figures, ratios, switch and punch times."""
    s: dict[str, list] = {}

    def rcol(k, *keys):
        # a run whose path was wrong or changed carries "error": not a sample
        return [
            None
            if isinstance(dig(r, "relay", k, keys[0]), dict) and "error" in dig(r, "relay", k, keys[0])
            else dig(r, "relay", k, *keys)
            for r in reps
        ]

    for k in RELAY_KEYS:
        s[f"relay_{k}_tcp_gbps"] = rcol(k, "tcp", "gbps")
        s[f"relay_{k}_rtt_ms"] = rcol(k, "rtt", "avg_ms")
        s[f"relay_{k}_tcp_retransmits"] = rcol(k, "tcp", "retransmits")
        gbit = rcol(k, "tcp", "gbit_received")
        s[f"relay_{k}_cpu_s_per_gbit"] = rcol(k, "tcp", "cpu_s_per_gbit")
        s[f"relay_{k}_trs_cpu_s_per_gbit"] = list(map(ratio, rcol(k, "tcp", "cpu", "daemon_cpu_s", "trs"), gbit))
        s[f"relay_{k}_trs_cpu_pct"] = [
            100 * c / w if c is not None and w else None
            for c, w in zip(rcol(k, "tcp", "cpu", "daemon_cpu_s", "trs"), rcol(k, "tcp", "cpu", "wall_s"), strict=True)
        ]
        s[f"relay_{k}_tcp_outside_cpu_pct"] = rcol(k, "tcp", "cpu", "outside_cpu_pct")
    for m in ("tcp_gbps", "rtt_ms"):
        name = m.split("_")[0]
        s[f"relay_ratio_{name}"] = list(map(ratio, s[f"relay_relayed_{m}"], s[f"relay_direct_{m}"]))
        s[f"relay_ratio_v6cn_{name}"] = list(map(ratio, s[f"relay_v6cn_{m}"], s[f"relay_direct_{m}"]))
        for k in ("nebula_relayed", "direct", "relayed"):  # against Nebula hole punched, same repetition
            s[f"relay_{k}_vs_nebula_direct_{name}"] = list(
                map(ratio, s[f"relay_{k}_{m}"], s[f"relay_nebula_direct_{m}"])
            )
    s["relay_switch_s"] = [dig(r, "relay", "switch", "to_registered_s") for r in reps]
    s["relay_punch_s"] = [
        next((t for t, path in dig(r, "relay", "direct", "path_check", "path_changes") or [] if path == "direct"), None)
        for r in reps
    ]
    return s


def _restart_series(restarts: list[dict]) -> dict[str, list]:
    """Signaling timers and dig times per restart of mn's daemon."""
    s: dict[str, list] = {}
    s["route_selection_ms"] = [x for r in restarts for x in r.get("route_selection_ms", [])]
    s["tunnel_establishment_ms"] = [x for r in restarts for x in r.get("tunnel_establishment_ms", [])]
    s["dns_first_query_ms"] = [dig(r, "dns_first", "query_ms") for r in restarts]
    s["dns_first_overhead_ms"] = [
        dig(r, "dns_first", "query_ms") - sum(r["route_selection_ms"]) - sum(r["tunnel_establishment_ms"])
        if dig(r, "dns_first", "query_ms") is not None
        and r.get("route_selection_ms")
        and r.get("tunnel_establishment_ms")
        else None
        for r in restarts
    ]
    s["dns_cached_query_ms"] = [dig(r, "dns_second", "query_ms") for r in restarts]
    s["restart_to_registered_s"] = [r.get("start_to_registered_s") for r in restarts]
    s["daemon_stop_s"] = [r.get("stop_s") for r in restarts]
    return s


PERCENTILES = {
    "route_selection_ms",
    "tunnel_establishment_ms",
    "dns_first_query_ms",
    "dns_first_overhead_ms",
    "dns_cached_query_ms",
    "restart_to_registered_s",
    "daemon_stop_s",
}


def unit(key: str) -> str:
    if key.startswith("c_vs_b_"):
        return "x (C/B)"
    if "_vs_nebula_" in key:
        return "x (/ Nebula)"
    if key.startswith("relay_ratio_"):
        return "x (relayed/direct)"
    for suffix, u in (
        ("_gbps", "Gbit/s"),
        ("_mbps", "Mbit/s"),
        ("_ms", "ms"),
        ("retransmits", "segments"),
        ("_retries", "runs"),
        ("cpu_s_per_gbit", "CPU-s/Gbit"),
        ("cpu_s_per_gbit_mn", "CPU-s/Gbit"),
        ("cpu_s_per_gbit_cn", "CPU-s/Gbit"),
        ("_cpu_pct", "% of a core"),
        ("_pct", "%"),
        ("_cpu_s", "CPU-s"),
        ("_s", "s"),
    ):
        if key.endswith(suffix):
            return u
    return ""


def summary(s: dict[str, list]) -> dict:
    labels = report.labels()
    return {k: summarize(v, unit(k), labels.get(k, k).strip(), percentiles=k in PERCENTILES) for k, v in s.items()}


def goals(summ: dict) -> dict:
    out = {}
    for name, (op, bound) in GOALS.items():
        med = (summ.get(f"c_vs_b_{name}") or {}).get("median")
        met = None if med is None else (med >= bound if op == ">=" else med <= bound)
        out[name] = {
            "goal": f"{op} {bound}",
            "median": med,
            "met": met,
            "min": (summ.get(f"c_vs_b_{name}") or {}).get("min"),
            "max": (summ.get(f"c_vs_b_{name}") or {}).get("max"),
        }
    for name, (op, bound) in RELAY_GOALS.items():
        s = summ.get(f"relay_ratio_{name}") or {}
        med = s.get("median")
        out[f"relay_{name}"] = {
            "goal": f"relayed/direct {op} {bound}",
            "median": med,
            "met": None if med is None else (med >= bound if op == ">=" else med <= bound),
            "min": s.get("min"),
            "max": s.get("max"),
        }
    return out
