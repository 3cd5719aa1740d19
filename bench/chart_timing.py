"""Charts of the adapter's UDP offered load and of signaling times.

- `udp_load`: received Mbit/s, jitter and loss against offered Mbit/s from
  result["adapter"]["load_table"], with the seed paper's three tables
  (bench/seed.py) dashed: they were measured on other hardware, so the
  lines show shape, not a contest.
- `signaling`: distributions (ECDF) of route selection and tunnel
  establishment: mn's daemon restarts, the adapter stage's timers when they
  kept samples, and result["scaling"]["concurrency"] per peer count.
- `scaling`: p50/p99 of the same against concurrent peers, and what 100
  open tunnels cost (RSS, CPU, keepalive).
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.ticker import FuncFormatter, NullFormatter

from bench.chart_common import plt, save
from bench.seed import LOAD_KEYS, LOAD_TABLES
from bench.stats import percentile

LOAD_LINES = (  # load_table key, label, colour
    ("gn1_up", "gn1 -> cn (general node via adapter)", "#f28e2b"),
    ("gn1_down", "cn -> gn1", "#b07aa1"),
    ("mn_up", "mn -> cn (node)", "#e15759"),
    ("mn_down", "cn -> mn", "#4e79a7"),
)
TIMERS = (("route_selection_ms", "route selection"), ("tunnel_establishment_ms", "tunnel establishment"))


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v) else None


PLAIN = FuncFormatter(lambda v, _: f"{v:g}")  # "100" and "0.01" read faster than 10^2 and 10^-2


def _time_scale(ax, values: list[float], axis: str = "x") -> str:
    """Log scale for times; symlog when a 0 is among them (tunnel establishment is 0 ms when the
    tunnel already stood), linear below the smallest positive decade so the rest keeps the room."""
    positive = [v for v in values if v > 0]
    setter = ax.set_xscale if axis == "x" else ax.set_yscale
    if positive and len(positive) == len(values):
        setter("log")
        how = "log"
    else:
        thresh = 10 ** math.floor(math.log10(min(positive))) if positive else 1.0
        setter("symlog", linthresh=thresh, linscale=0.3)
        # a little room left of / below 0, so samples at 0 are not hidden in the frame
        (ax.set_xlim if axis == "x" else ax.set_ylim)(-0.2 * thresh, None if positive else 1.0)
        how = f"symmetric log, linear below {thresh:g}"
    which = ax.xaxis if axis == "x" else ax.yaxis
    which.set_major_formatter(PLAIN)
    # within one decade matplotlib labels minor ticks (as 2x10^0); across more they would crowd
    narrow = positive and max(positive) < 10 * min(positive)
    which.set_minor_formatter(PLAIN if narrow else NullFormatter())
    return how


def _load_points(rows) -> list[tuple[float, float | None, float | None, float | None]]:
    """(offered, received, jitter, loss) of the rows that ran (an "error" row has no figures)."""
    pts = []
    for r in rows or []:
        if not isinstance(r, dict) or r.get("error") or (rate := _num(r.get("rate_mbps"))) is None:
            continue
        pts.append((rate, _num(r.get("received_mbps")), _num(r.get("jitter_ms")), _num(r.get("lost_percent"))))
    return sorted(pts, key=lambda p: p[0])


def udp_load(result: dict, path: Path) -> Path | None:
    """Three panels against offered Mbit/s (log x): received, jitter, loss; ours solid, the seed's dashed."""
    tables = (result.get("adapter") or {}).get("load_table") or {}
    ours = [(key, label, color, pts) for key, label, color in LOAD_LINES if (pts := _load_points(tables.get(key)))]
    if not ours:
        return None
    colors = {key: color for key, _, color in LOAD_LINES}
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    panels = ((1, "received Mbit/s"), (2, "jitter ms"), (3, "loss %"))
    for ax, (i, unit) in zip(axes, panels, strict=True):
        for _, label, color, pts in ours:
            xy = [(p[0], p[i]) for p in pts if p[i] is not None]
            ax.plot([x for x, _ in xy], [y for _, y in xy], "o-", color=color, ms=4, lw=1.6, label=label)
        for title, rows in LOAD_TABLES.items():  # the seed's columns: rate, throughput, jitter, loss
            ax.plot(
                [r[0] for r in rows],
                [r[i] for r in rows],
                "s--",
                color=colors[LOAD_KEYS[title]],
                ms=3,
                lw=1,
                alpha=0.8,
                label=f"seed (other hardware): {title}",
            )
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(PLAIN)
        ax.set_xlabel("offered Mbit/s (iperf3 -b)")
        ax.set_title(unit, fontsize=10)
        ax.grid(color="#e5e5e5", linewidth=0.6)
    top = max(p[0] for *_, pts in ours for p in pts)
    axes[0].plot([10, top], [10, top], ":", color="#999999", lw=1, label="received = offered")
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    # symlog: 0 % (most rows) stays on the axis while 0.01 % and 30 % remain readable
    axes[2].set_yscale("symlog", linthresh=0.01, linscale=0.5)
    axes[2].set_ylim(bottom=0)
    for ax in axes:  # after the scales: setting a scale resets the formatter
        ax.yaxis.set_major_formatter(PLAIN)
    axes[2].axhline(1.0, color="#333333", lw=1, ls="-.")
    axes[2].annotate("1 %", (axes[2].get_xlim()[0], 1.0), xytext=(3, 3), textcoords="offset points", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7.5, frameon=False, bbox_to_anchor=(0.5, 0.04))
    fig.suptitle(
        "UDP offered load through the CYPHONIC adapter and node to cn (datagrams fill one inner packet)", fontsize=11
    )
    return save(fig, result, path, rect=(0, 0.17, 1, 0.96))


def _flat(values) -> list[float]:
    """Numbers from a list that may nest one level (a restart records a list per timer)."""
    out: list[float] = []
    for v in values or []:
        if isinstance(v, list):
            out += [x for x in map(_num, v) if x is not None]
        elif (x := _num(v)) is not None:
            out.append(x)
    return out


def _signaling_sources(result: dict) -> list[tuple[str, dict[str, list[float]]]]:
    """(label, {timer: samples}) per source that has any sample."""
    sources = []
    restarts = (result.get("samples") or {}).get("restarts") or []
    got = {k: _flat(r.get(k) for r in restarts if isinstance(r, dict)) for k, _ in TIMERS}
    sources.append(("mn daemon restarts", got))
    timers = (result.get("adapter") or {}).get("timers") or {}
    for who, label in (("adapter", "adapter (adapter stage)"), ("node", "mn (adapter stage)")):
        t = timers.get(who) or {}
        sources.append((label, {k: _flat((t.get(k) or {}).get("samples")) for k, _ in TIMERS}))
    for c in (result.get("scaling") or {}).get("concurrency") or []:
        if isinstance(c, dict):
            n = c.get("peers", "?")
            sources.append((f"{n} peer{'' if n == 1 else 's'} at once", {k: _flat(c.get(k)) for k, _ in TIMERS}))
    return [(label, got) for label, got in sources if any(got.values())]


def signaling(result: dict, path: Path) -> Path | None:
    """ECDF of route selection and tunnel establishment, one line per source."""
    sources = _signaling_sources(result)
    if not sources:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    cmap = plt.get_cmap("tab10")
    for ax, (key, title) in zip(axes, TIMERS, strict=True):
        for i, (label, got) in enumerate(sources):
            v = sorted(got.get(key) or [])
            if not v:
                continue
            y = [(j + 1) / len(v) for j in range(len(v))]
            # a step at each sample; a single sample is a visible marker rather than an invisible jump
            ax.step(v, y, where="post", color=cmap(i % 10), lw=1.6, label=f"{label}, n={len(v)}")
            if len(v) == 1 or v[0] == v[-1]:  # all at one value: a vertical jump the frame could hide
                ax.plot(v[-1:], [1.0], "o", color=cmap(i % 10), ms=5, clip_on=False)
        values = [v for _, got in sources for v in got.get(key) or []]
        how = _time_scale(ax, values)
        ax.set_xlabel(f"ms ({how})")
        if values and not any(values):
            ax.text(0.5, 0.5, "every sample 0 ms", ha="center", transform=ax.transAxes, color="#555555")
        ax.set_title(title, fontsize=10)
        ax.grid(color="#e5e5e5", linewidth=0.6)
        ax.legend(fontsize=7.5, loc="lower right")
    axes[0].set_ylabel("fraction of samples <= x")
    fig.suptitle("Signaling times (daemon timers): distributions", fontsize=11)
    return save(fig, result, path, rect=(0, 0.04, 1, 0.96))


def _tunnels_text(t: dict) -> str:
    def mib(k):
        v = _num(t.get(k))
        return None if v is None else v / 1024

    before, after = mib("rss_kib_before"), mib("rss_kib_after")
    # RSS and CPU are the target daemon's, the end every tunnel shares
    lines = [f"{t.get('count', '?')} tunnels held up at {t.get('target', '?')}'s daemon:"]
    if before is not None and after is not None:
        lines.append(f"RSS {before:.1f} -> {after:.1f} MiB (+{after - before:.1f})")
    if (c := _num(t.get("cpu_pct_of_core"))) is not None:
        window = _num(t.get("window_s"))
        lines.append(f"CPU {c:.2g} % of a core" + (f" over {window:.0f} s" if window else ""))
    if (k := _num(t.get("keepalive_s"))) is not None:
        lines.append(f"keepalive every {k:g} s")
    return "\n".join(lines)


def scaling(result: dict, path: Path) -> Path | None:
    """p50/p99 of route selection and tunnel establishment against concurrent peers, and the tunnels' cost."""
    sc = result.get("scaling") or {}
    rows = [c for c in sc.get("concurrency") or [] if isinstance(c, dict) and _num(c.get("peers"))]
    tunnels = sc.get("tunnels") if isinstance(sc.get("tunnels"), dict) else None
    series = []
    for key, title in TIMERS:
        pts = [(c["peers"], percentile(_flat(c.get(key)), 50), percentile(_flat(c.get(key)), 99)) for c in rows]
        pts = [p for p in sorted(pts) if p[1] is not None]
        if pts:
            series.append((title, pts))
    if not series and not tunnels:
        return None
    fig, (ax, text_ax) = plt.subplots(1, 2, figsize=(9.5, 4.2), gridspec_kw={"width_ratios": [2.2, 1]})
    for (title, pts), color in zip(series, ("#e15759", "#4e79a7"), strict=False):
        xs = [p[0] for p in pts]
        ax.plot(xs, [p[1] for p in pts], "o-", color=color, label=f"{title} p50")
        ax.plot(xs, [p[2] for p in pts], "^--", color=color, label=f"{title} p99")
    drawn = {p[0] for _, pts in series for p in pts}
    for c in rows:  # a failure at a peer count is the first thing to see (beside its point, if drawn)
        if c.get("failed") and c["peers"] in drawn:
            ax.annotate(
                f"{c['failed']} failed",
                (c["peers"], 0),
                xycoords=("data", "axes fraction"),
                xytext=(0, 4),
                textcoords="offset points",
                ha="center",
                fontsize=8,
                color="#c00000",
            )
    if series:
        ax.set_xscale("log")
        _time_scale(ax, [v for _, pts in series for p in pts for v in p[1:] if v is not None], axis="y")
        ax.set_xticks([p[0] for p in series[0][1]], [str(p[0]) for p in series[0][1]])
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no concurrency samples", ha="center", va="center", transform=ax.transAxes, color="#777777")
    ax.set_xlabel("peers signaling at once")
    ax.set_ylabel("ms")
    ax.grid(color="#e5e5e5", linewidth=0.6)
    cfg = sc.get("config") or {}
    ax.set_title(f"peers starting at once on {cfg.get('host', '?')}, all to {cfg.get('target', '?')}", fontsize=10)
    text_ax.axis("off")
    box = [_tunnels_text(tunnels)] if tunnels else []
    failed = [f"{c['peers']} peers: {c['failed']} failed" for c in rows if c.get("failed")]
    if failed:
        box.append("\n".join(failed))
    if box:
        text_ax.text(
            0.02,
            0.95,
            "\n\n".join(box),
            va="top",
            fontsize=9,
            family="monospace",
            bbox={"boxstyle": "round", "facecolor": "#f4f4f4", "edgecolor": "#bbbbbb"},
        )
    fig.suptitle("CYPHONIC signaling under many peers", fontsize=11)
    return save(fig, result, path, rect=(0, 0.04, 1, 0.96))
