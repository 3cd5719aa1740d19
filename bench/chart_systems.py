"""The headline chart: TCP and idle RTT of every system and path a run measured.

Grouped by what the data crosses (mn -> cn through cn's NAPT, a1 -> b1
across two NAPTs, a general node through the CYPHONIC adapter), each bar
labelled with its median and its ratio to Nebula in the same group: the
groups are different paths, so a ratio across groups would mean nothing.
"""

from __future__ import annotations

from pathlib import Path

from bench.chart_common import ADAPTER, COLORS, MN_CN, RELAY, Stat, hbars, mn_cn_label, number, plt, save, stat

# group heading, its paths (prefix, label), the prefix the ratios refer to
Group = tuple[str, list[tuple[str, str]], str | None]


def groups(result: dict) -> list[Group]:
    return [
        ("mn -> cn (reverse)", [(p, mn_cn_label(result, p)) for p, _, _ in MN_CN], "nebula"),
        ("a1 -> b1 across two NAPTs", list(RELAY), "relay_nebula_direct"),
        # no Nebula behind an adapter: no reference, so no ratio
        ("via adapter (-> cn)", list(ADAPTER), None),
    ]


def _ratio_text(s: Stat, ref: Stat | None, is_ref: bool) -> str:
    if is_ref:
        return f"{number(s[0])}  (= 1×, reference)"
    if ref is None or not ref[0]:
        return number(s[0])
    return f"{number(s[0])}  {s[0] / ref[0]:.2g}× Nebula"


def systems(result: dict, path: Path) -> Path | None:
    """TCP Gbit/s (left) and idle RTT ms (right) for every path present; None without any."""
    summary = result.get("summary") or {}
    tcp_rows: list[tuple[str, Stat | None, str | None, str]] = []
    rtt_rows: list[tuple[str, Stat | None, str | None, str]] = []
    for heading, paths, ref_key in groups(result):
        present = [
            (p, label, stat(summary, f"{p}_tcp_gbps"), stat(summary, f"{p}_rtt_ms"))
            for p, label in paths
            if stat(summary, f"{p}_tcp_gbps") or stat(summary, f"{p}_rtt_ms")
        ]
        if not present:
            continue
        ref = stat(summary, f"{ref_key}_tcp_gbps") if ref_key else None
        tcp_rows.append((heading, None, None, ""))
        rtt_rows.append((heading, None, None, ""))
        for p, label, tcp, rtt in present:
            color = COLORS.get(p, "#777777")
            tcp_rows.append((label, tcp, color, _ratio_text(tcp, ref, p == ref_key) if tcp else ""))
            rtt_rows.append((label, rtt, color, number(rtt[0]) if rtt else ""))
    if not tcp_rows:
        return None
    # 8.2 in at 110 dpi: ~900 px, the README's width, so nothing is scaled down there
    fig, (ax_tcp, ax_rtt) = plt.subplots(
        1, 2, figsize=(8.2, max(3.2, 1.4 + 0.27 * len(tcp_rows))), sharey=True, gridspec_kw={"width_ratios": [3, 2]}
    )
    hbars(ax_tcp, tcp_rows, "TCP Gbit/s (median, min-max)", pad=1.6)
    hbars(ax_rtt, rtt_rows, "idle RTT ms (lower is better)", pad=1.3)
    ax_rtt.tick_params(axis="y", labelleft=False)
    ax_tcp.set_title("TCP; × = median / Nebula's median in the same group", fontsize=9)
    ax_rtt.set_title("idle RTT", fontsize=9)
    fig.suptitle("TCP and idle RTT of every system and path in one run (median, min-max whiskers)", fontsize=10.5)
    return save(fig, result, path, rect=(0, 0.03, 1, 0.97))
