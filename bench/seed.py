"""The seed paper's published figures and ours beside them, table by table.

The seed (/work/shared/seed/000_932a937ea01e651d.txt, "Basic evaluation"
and the backup slides) evaluated the CYPHONIC adapter on Raspberry Pi 4s
with a MacBook Air as the general node. Its tables are kept here with the
seed's own row and column labels, so the run's report can print the same
tables with our figure next to each of the seed's (`markdown`), and store
the same numbers as data (`figures`, kept as result["seed_tables"]).

Where ours come from (bench/adapter.py measures, adapter_report.py
summarizes): result["adapter"] timers, dns, arp, load_table and summary,
and the node's restarts (result["summary"]) for the node's DNS answer.
Missing data gives "–", never an exception: older runs lack the adapter.
"""

from __future__ import annotations

import statistics

from bench.stats import fmt

SEED = "/work/shared/seed/000_932a937ea01e651d.txt"
SEED_HARDWARE = (
    "Raspberry Pi 4 Model B (Quad Core 1.5 GHz Broadcom BCM2711, 4 GB, Raspbian 10) as CYPHONIC cloud, "
    "adapter and node; a MacBook Air 2017 (Core i7-5650U 2.2 GHz, macOS 12.2) as the general node"
)
DASH = "–"

# "Adapter processing time", ms; columns as the seed names them. The seed
# gives no ARP figure for the node (a node has no LAN to answer ARP on).
ADAPTER_TIME_TITLE = "Adapter processing time"
ADAPTER_TIME_COLUMNS = ("CYPHONIC adapter", "CYPHONIC node")
ADAPTER_TIME: dict[str, tuple[float | None, float | None]] = {
    "Route selection process time": (19.74, 16.20),
    "Tunnel establishment process time": (2.75, 2.23),
    "ARP process time": (0.32, None),
}
# our timer for each seed row (status "timers" of the adapter and of mn)
ADAPTER_TIME_TIMERS = {
    "Route selection process time": "route_selection_ms",
    "Tunnel establishment process time": "tunnel_establishment_ms",
    "ARP process time": "arp_ms",
}

# "Delay time of Initial communication": DNS and ARP response time seen by
# the general node (and by a CYPHONIC node). The seed shows it only as a
# chart: no number is published, so the seed's cells say so.
INITIAL_DELAY_TITLE = "Delay time of Initial communication (DNS and ARP response time)"
INITIAL_DELAY_COLUMNS = ("General node", "CYPHONIC node")
INITIAL_DELAY_ROWS = ("DNS response, first query (route selection)", "DNS response, repeated query", "ARP response")
NOT_PUBLISHED = "not published (chart only)"

# "Network Quality"; (general node via adapter, node), the seed's units
NETWORK_QUALITY_TITLE = "Network Quality"
NETWORK_QUALITY_COLUMNS = ("Network Quality (General node via CYPHONIC adapter)", "Network Quality (CYPHONIC node)")
NETWORK_QUALITY: dict[str, tuple[float, float, str]] = {
    "UDP Throughput": (30.0, 30.0, "Mbits/sec"),
    "Jitter": (0.459, 0.450, "ms"),
    "TCP Throughput": (37.3, 44.4, "Mbits/sec"),
    "Round-trip time": (3.594, 2.523, "ms"),
}
NETWORK_QUALITY_UDP_MBPS = 30  # the seed's UDP row is its 30 Mbit/s offered-load row (same jitter)
UDP_MAX_ROW = "UDP highest rate with < 0.1 % loss (ours only)"

# UDP offered load: rows (Traffic Mbit/s, Throughput Mbit/s, Jitter ms, Loss rate %)
LOAD_COLUMNS = ("Traffic", "Throughput", "Jitter", "Loss rate")
LOAD_TABLES: dict[str, tuple[tuple[float, float, float, float], ...]] = {
    "General Node ⇒ CYPHONIC Node": (
        (10, 10.0, 0.547, 0.0),
        (20, 20.0, 0.531, 0.0),
        (30, 30.0, 0.459, 0.0),
        (40, 39.6, 0.250, 0.93),
        (50, 47.7, 0.173, 1.27),
    ),
    "CYPHONIC Node ⇒ General Node": (
        (10, 10.0, 0.787, 0.0),
        (20, 20.0, 0.680, 0.0),
        (30, 30.0, 0.395, 0.0),
        (40, 39.8, 0.326, 0.28),
        (50, 49.5, 0.266, 0.46),
    ),
    "CYPHONIC Node ⇒ CYPHONIC Node": (
        (10, 10.0, 0.524, 0.0),
        (20, 20.0, 0.520, 0.0),
        (30, 30.0, 0.450, 0.0),
        (40, 40.0, 0.385, 0.013),
        (50, 49.9, 0.246, 0.056),
    ),
}
# our load_table key for each seed table (up = client -> cn, down = cn -> client)
LOAD_KEYS = {
    "General Node ⇒ CYPHONIC Node": "gn1_up",
    "CYPHONIC Node ⇒ General Node": "gn1_down",
    "CYPHONIC Node ⇒ CYPHONIC Node": "mn_up",
}
LOAD_LOSS_LIMIT = 1.0  # % : our extra rows stop at the first one past it, as the adapter stage does


def _get(record, *keys):
    for k in keys:
        if not isinstance(record, dict):
            return None
        record = record.get(k)
    return record


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _median(values) -> float | None:
    got = [float(v) for v in values or [] if _num(v) is not None]
    return statistics.median(got) if got else None


def _adapter_median(a: dict, key: str, raw: list | None = None) -> float | None:
    """adapter.summary[key].median, else the median of the raw samples (a run not yet summarized)."""
    m = _num(_get(a, "summary", key, "median"))
    return m if m is not None else _median(raw)


def _load_row(table: list | None, rate: float) -> dict | None:
    for r in table or []:
        if isinstance(r, dict) and r.get("rate_mbps") == rate and not r.get("error"):
            return r
    return None


def _ours_load(r: dict | None) -> dict | None:
    if r is None:
        return None
    return {
        "throughput_mbps": _num(r.get("received_mbps")),
        "jitter_ms": _num(r.get("jitter_ms")),
        "loss_pct": _num(r.get("lost_percent")),
    }


def figures(result: dict) -> dict:
    """The seed's tables with ours beside each figure, as JSON-able data (None = not measured)."""
    a = result.get("adapter") or {}
    summary = result.get("summary") or {}
    timers = a.get("timers") or {}
    tables = a.get("load_table") or {}
    env = result.get("environment") or {}
    out: dict = {
        "source": SEED,
        "seed_hardware": SEED_HARDWARE,
        "our_hardware": f"{env.get('cpu_model') or '?'} x {env.get('cpus') or '?'}",
    }

    rows: list[dict] = []
    for row, seeds in ADAPTER_TIME.items():
        cells = {}
        for col, seed, who in zip(ADAPTER_TIME_COLUMNS, seeds, ("adapter", "node"), strict=True):
            t = _get(timers, who, ADAPTER_TIME_TIMERS[row]) or {}
            cells[col] = {"seed": seed, "ours": _num(t.get("p50")), "ours_n": t.get("count"), "ours_stat": "p50"}
        rows.append({"row": row, **cells})
    out["adapter_processing_time"] = {
        "title": ADAPTER_TIME_TITLE,
        "unit": "ms",
        "columns": ADAPTER_TIME_COLUMNS,
        "rows": rows,
        "node_restarts": {
            "route_selection_ms": _num(_get(summary, "route_selection_ms", "p50")),
            "tunnel_establishment_ms": _num(_get(summary, "tunnel_establishment_ms", "p50")),
            "n": _get(summary, "route_selection_ms", "n"),
        },
    }

    dns = a.get("dns") or {}
    gn = (
        _adapter_median(a, "dns_cold_query_ms", [x.get("query_ms") for x in dns.get("cold") or []]),
        _adapter_median(a, "dns_warm_query_ms", [x.get("query_ms") for x in dns.get("warm") or []]),
        _num(_get(a, "arp", "median_ms")) or _median(_get(a, "arp", "times_ms")),
    )
    # the node's resolver answers its own first query after a restart (dig, whole ms); it has no ARP
    node = (
        _num(_get(summary, "dns_first_query_ms", "median")),
        _num(_get(summary, "dns_cached_query_ms", "median")),
        None,
    )
    out["initial_delay"] = {
        "title": INITIAL_DELAY_TITLE,
        "unit": "ms",
        "columns": INITIAL_DELAY_COLUMNS,
        "seed_note": NOT_PUBLISHED,
        "rows": [
            {
                "row": row,
                INITIAL_DELAY_COLUMNS[0]: {"seed": None, "ours": g},
                INITIAL_DELAY_COLUMNS[1]: {"seed": None, "ours": n},
            }
            for row, g, n in zip(INITIAL_DELAY_ROWS, gn, node, strict=True)
        ],
    }

    at30 = [_load_row(tables.get(k), NETWORK_QUALITY_UDP_MBPS) for k in ("gn1_up", "mn_up")]
    ours_nq = {
        "UDP Throughput": [_num((r or {}).get("received_mbps")) for r in at30],
        "Jitter": [_num((r or {}).get("jitter_ms")) for r in at30],
        "TCP Throughput": [
            None if (g := _adapter_median(a, k)) is None else g * 1000 for k in ("gn_tcp_gbps", "node_tcp_gbps")
        ],
        "Round-trip time": [_adapter_median(a, k) for k in ("gn_rtt_ms", "node_rtt_ms")],
    }
    rows = []
    for row, (sg, sn, unit) in NETWORK_QUALITY.items():
        og, on = ours_nq[row]
        rows.append(
            {
                "row": row,
                "unit": unit,
                NETWORK_QUALITY_COLUMNS[0]: {"seed": sg, "ours": og},
                NETWORK_QUALITY_COLUMNS[1]: {"seed": sn, "ours": on},
            }
        )
    udp_max = _adapter_median(a, "udp_max_mbps", [_get(a, "udp_search", "max_rate_mbps")])
    rows.append(
        {
            "row": UDP_MAX_ROW,
            "unit": "Mbits/sec",
            "ours_only": True,
            NETWORK_QUALITY_COLUMNS[0]: {"seed": None, "ours": udp_max},
            NETWORK_QUALITY_COLUMNS[1]: {"seed": None, "ours": None},
        }
    )
    out["network_quality"] = {
        "title": NETWORK_QUALITY_TITLE,
        "columns": NETWORK_QUALITY_COLUMNS,
        "udp_offered_mbps": NETWORK_QUALITY_UDP_MBPS,
        "rows": rows,
    }

    load = {}
    for title, seed_rows in LOAD_TABLES.items():
        key = LOAD_KEYS[title]
        ours = [r for r in tables.get(key) or [] if isinstance(r, dict) and not r.get("error")]
        rows = [
            {
                "traffic_mbps": rate,
                "seed": {"throughput_mbps": thr, "jitter_ms": jit, "loss_pct": loss},
                "ours": _ours_load(_load_row(ours, rate)),
                "ours_only": False,
            }
            for rate, thr, jit, loss in seed_rows
        ]
        top = max(r[0] for r in seed_rows)
        for r in sorted((r for r in ours if (_num(r.get("rate_mbps")) or 0) > top), key=lambda r: r["rate_mbps"]):
            rows.append({"traffic_mbps": r["rate_mbps"], "seed": None, "ours": _ours_load(r), "ours_only": True})
            if (_num(r.get("lost_percent")) or 0) > LOAD_LOSS_LIMIT:
                break  # the first rate past the limit closes the table, as in the stage itself
        load[title] = {"ours_key": key, "columns": LOAD_COLUMNS, "rows": rows}
    out["udp_load"] = load
    return out


def _f(v: float | None, unit: str = "") -> str:
    """Three significant figures like the bench's tables; "–" for a figure we lack."""
    if v is None:
        return DASH
    if v == 0:
        return f"0{unit}"
    return f"{fmt(v)}{unit}"


def _seed(v: float | None, unit: str = "", spec: str = "g") -> str:
    # in the seed's own precision (spec), as printed in the paper: "16.20ms", "10.0Mbps"
    return DASH if v is None else f"{v:{spec}}{unit}"


def markdown(result: dict) -> str:
    """The seed's tables, same rows and columns, each of our figures beside the seed's."""
    fig = figures(result)
    lines = [
        "## The seed paper's tables, with ours beside them",
        "",
        f"The seed's figures were measured on different hardware: {fig['seed_hardware']}. "
        f"Ours on {fig['our_hardware']} (this run, the bench lab's namespaces on one machine), "
        "so compare shapes and orders of magnitude, not the digits.",
        "",
    ]

    t = fig["adapter_processing_time"]
    cols = t["columns"]
    lines += [f"### {t['title']} (ms; ours: daemon timer p50 (n))", ""]
    lines.append("| | " + " | ".join(f"{c} (seed) | {c} (ours)" for c in cols) + " |")
    lines.append("|---|" + "---:|" * (2 * len(cols)))
    for r in t["rows"]:
        cells = []
        for c in cols:
            x = r[c]
            ours = _f(x["ours"], "ms") + (f" (n={x['ours_n']})" if x["ours"] is not None and x.get("ours_n") else "")
            cells += [_seed(x["seed"], "ms", ".2f"), ours]
        lines.append(f"| {r['row']} | " + " | ".join(cells) + " |")
    restarts = t.get("node_restarts") or {}
    if any(v is not None for v in restarts.values()):
        # the adapter stage reads mn's timers once; the restarts stage has many samples of the same timers
        lines += [
            "",
            f"Node mn over its {restarts.get('n') or '?'} daemon restarts (main stage), p50: route selection "
            f"{_f(restarts.get('route_selection_ms'), 'ms')}, tunnel establishment "
            f"{_f(restarts.get('tunnel_establishment_ms'), 'ms')}.",
        ]
    lines.append("")

    t = fig["initial_delay"]
    cols = t["columns"]
    lines += [
        f"### {t['title']} (ms)",
        "",
        'The seed measured these ("DNS and ARP response time") but shows them only as a chart. '
        "Ours: general node gn1 timing its own DNS query to the adapter and its ARP who-has (medians); "
        "node mn: dig's query time right after a daemon restart, and repeated.",
        "",
        "| | " + " | ".join(f"{c} (seed) | {c} (ours)" for c in cols) + " |",
        "|---|" + "---:|" * (2 * len(cols)),
    ]
    for r in t["rows"]:
        lines.append(f"| {r['row']} | " + " | ".join(f"{t['seed_note']} | {_f(r[c]['ours'])}" for c in cols) + " |")
    lines.append("")

    t = fig["network_quality"]
    cols = t["columns"]
    lines += [
        f"### {t['title']}",
        "",
        f"Ours: UDP at the seed's {t['udp_offered_mbps']} Mbit/s offered (received rate and jitter, "
        "from the offered-load table), TCP and RTT medians of the adapter stage's repetitions, to cn.",
        "",
        "| | " + " | ".join(f"{c} (seed) | {c} (ours)" for c in cols) + " |",
        "|---|" + "---:|" * (2 * len(cols)),
    ]
    for r in t["rows"]:
        unit = " " + r["unit"]
        spec = ".3f" if r["unit"] == "ms" else ".1f"
        cells = []
        for c in cols:
            cells += [_seed(r[c]["seed"], unit, spec), _f(r[c]["ours"], unit)]
        lines.append(f"| {r['row']} | " + " | ".join(cells) + " |")
    lines.append("")

    for title, t in fig["udp_load"].items():
        lines += [
            f"### {title} (UDP offered load; ours: {t['ours_key']})",
            "",
            "| Traffic | Throughput (seed) | Throughput (ours) | Jitter (seed) | Jitter (ours) "
            "| Loss rate (seed) | Loss rate (ours) |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in t["rows"]:
            s, o = r["seed"] or {}, r["ours"] or {}
            traffic = f"{r['traffic_mbps']:g}Mbps" + (" (ours only)" if r["ours_only"] else "")
            lines.append(
                f"| {traffic} | {_seed(s.get('throughput_mbps'), 'Mbps', '.1f')} "
                f"| {_f(o.get('throughput_mbps'), 'Mbps')} "
                f"| {_seed(s.get('jitter_ms'), 'ms', '.3f')} | {_f(o.get('jitter_ms'), 'ms')} "
                f"| {_seed(s.get('loss_pct'), '%')} | {_f(o.get('loss_pct'), '%')} |"
            )
        lines.append("")
    return "\n".join(lines)
