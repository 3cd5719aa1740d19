"""Charts of a bench run (matplotlib): PNGs a reader takes in at a glance.

    .venv/bin/python -m bench.charts bench/results/latest/results.json [--out DIR]

From a run's JSON (`bench/run.py`): every system and path side by side
(`systems`, the headline), throughput (TCP, TCP at 1 % loss, UDP) and idle
RTT of the mn -> cn systems, CPU per Gbit, relayed vs direct, the handover
gaps, the adapter's UDP offered-load curves, signaling-time distributions
and signaling against concurrent peers: each only when the run has data for
it. Every chart names the CPU, the commit and the date it was measured on.
Writes <stem>-<chart>.png next to the JSON (or into --out) and prints their
paths.

Modules: chart_common.py (labels, colours, footer, bars), chart_systems.py
(`systems`), chart_timing.py (`udp_load`, `signaling`, `scaling`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from bench.chart_common import COLORS, MN_CN, RELAY, Stat, bars, hbars, mn_cn_label, number, plt, save, stat
from bench.chart_systems import systems
from bench.chart_timing import scaling, signaling, udp_load


def _systems(result: dict, metric: str) -> tuple[list[str], list[Stat], list[str]]:
    """The mn -> cn systems that have `metric`, in MN_CN order."""
    summary = result.get("summary") or {}
    labels, stats, colors = [], [], []
    for key, _, _ in MN_CN:
        s = stat(summary, f"{key}_{metric}")
        if s is not None:
            labels.append(mn_cn_label(result, key, sep="\n"))  # the version under the name: narrow bars
            stats.append(s)
            colors.append(COLORS[key])
    return labels, stats, colors


def throughput(result: dict, path: Path) -> Path | None:
    panels = [
        ("tcp_gbps", "TCP", "Gbit/s"),
        ("tcp_loss_gbps", "TCP at 1 % random loss", "Gbit/s"),
        ("udp_received_mbps", "UDP at <= 1 % loss", "Mbit/s"),
        ("rtt_ms", "idle RTT (lower is better)", "ms"),
    ]
    data = [(p, _systems(result, p[0])) for p in panels]
    if not any(d[1][1] for d in data):
        return None
    # 2 x 2: with five systems a row of four panels leaves no room for the labels
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.4))
    for ax, ((_, title, unit), (labels, stats, colors)) in zip(axes.flat, data, strict=True):
        bars(ax, labels, stats, colors, unit)
        ax.set_title(title, fontsize=10)
    summary = result.get("summary") or {}
    names = [n for k, n, _ in MN_CN if any(x.startswith(k + "_") for x in summary)]
    fig.suptitle(f"mn -> cn: {', '.join(names)} in one run (median, min-max whiskers)", fontsize=11)
    return save(fig, result, path, rect=(0, 0.03, 1, 0.97))


def cpu(result: dict, path: Path) -> Path | None:
    """CPU-s per Gbit of every system and path that has it, grouped like `systems`."""
    summary = result.get("summary") or {}
    rows: list[tuple[str, Stat | None, str | None, str]] = []
    for heading, paths in (
        ("mn -> cn", [(k, mn_cn_label(result, k)) for k, _, _ in MN_CN]),
        ("a1 -> b1 across two NAPTs", list(RELAY)),
    ):
        present = [(k, label, s) for k, label in paths if (s := stat(summary, f"{k}_cpu_s_per_gbit"))]
        if present:
            rows.append((heading, None, None, ""))
            rows += [(label, s, COLORS.get(k, "#777777"), number(s[0])) for k, label, s in present]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8.2, max(3.2, 1.3 + 0.27 * len(rows))))
    hbars(ax, rows, "CPU-s per Gbit = cores per Gbit/s (lower is better)", pad=1.25)
    ax.set_title("CPU of the tunnel processes per Gbit of TCP (median, min-max)", fontsize=10)
    return save(fig, result, path, rect=(0, 0.04, 1, 1))


def relay(result: dict, path: Path) -> Path | None:
    summary = result.get("summary") or {}
    present = [(label, s, COLORS[k]) for k, label in RELAY if (s := stat(summary, f"{k}_tcp_gbps")) is not None]
    if not present:
        return None
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 * len(present)), 4))
    bars(ax, [p[0].replace(" ", "\n", 1) for p in present], [p[1] for p in present], [p[2] for p in present], "Gbit/s")
    ax.set_title("TCP a1 -> b1 across two NAPTs: hole-punched direct vs relayed", fontsize=10)
    return save(fig, result, path)


def handover(result: dict, path: Path) -> Path | None:
    kinds = (result.get("handover") or {}).get("summary") or {}
    present = []
    for kind, label in (("same_family", "same family"), ("napt", "to/from NAPT"), ("family", "across families")):
        s = stat(kinds.get(kind) or {}, "gap_ms")
        if s is not None:
            present.append((label, s))
    if not present:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    bars(ax, [p[0] for p in present], [p[1] for p in present], ["#e15759"] * len(present), "longest ping gap, ms")
    nebula = stat(kinds.get("nebula_same_family") or {}, "gap_ms")
    title = "CYPHONIC handover: mn moves while it pings cn every 10 ms"
    if nebula is not None:
        title += f"\n({mn_cn_label(result, 'nebula')}, same family: {nebula[0] / 1000:.1f} s, off this scale)"
    ax.set_title(title, fontsize=10)
    return save(fig, result, path)


CHARTS: tuple[tuple[str, Callable[[dict, Path], Path | None]], ...] = (
    ("systems", systems),
    ("throughput", throughput),
    ("cpu", cpu),
    ("relay", relay),
    ("handover", handover),
    ("udp_load", udp_load),
    ("signaling", signaling),
    ("scaling", scaling),
)


def render(result: dict, out: Path, stem: str) -> list[Path]:
    """Every chart the run has data for, as <out>/<stem>-<chart>.png, in CHARTS order."""
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for name, chart in CHARTS:
        path = chart(result, out / f"{stem}-{name}.png")
        if path is not None:
            made.append(path)
    return made


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.charts", description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("results", type=Path, help="a run's JSON (bench/results/*.json)")
    ap.add_argument("--out", type=Path, help="where the PNGs go (default: next to the JSON)")
    args = ap.parse_args(argv)
    result = json.loads(args.results.read_text())
    for path in render(result, args.out or args.results.parent, args.results.stem):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
