"""Charts of a bench run (matplotlib): PNGs a reader takes in at a glance.

    .venv/bin/python -m bench.charts bench/results/latest.json [--out DIR]

From a run's JSON (`bench/run.py`): throughput (TCP, TCP at 1 % loss, UDP)
and idle RTT per system with min-max whiskers, CPU per Gbit, relayed vs
direct, and the handover gaps when the run has them. Every chart names the
CPU, the commit and the date it was measured on. Writes <stem>-<chart>.png
next to the JSON (or into --out) and prints their paths.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

SYSTEMS = (("plain", "plain routing"), ("nebula", "Nebula 1.6.1"), ("cyphonic", "CYPHONIC"))
COLORS = {"plain": "#9e9e9e", "nebula": "#4e79a7", "cyphonic": "#e15759"}


def _stat(summary: dict, key: str) -> tuple[float, float, float] | None:
    s = summary.get(key)
    if not s or s.get("median") is None:
        return None
    return s["median"], s["min"], s["max"]


def _footer(fig, result: dict) -> None:
    env = result.get("environment", {})
    commit = (env.get("git_commit") or "")[:7]
    fig.text(
        0.01,
        0.01,
        f"{env.get('cpu_model', '?')} x {env.get('cpus', '?')}, kernel {env.get('kernel', '?')}, "
        f"commit {commit}, {result.get('started_utc', '')}",
        fontsize=7,
        color="#555555",
    )


def _save(fig, result: dict, path: Path, rect: tuple = (0, 0.05, 1, 1)) -> Path:
    _footer(fig, result)
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _number(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _bars(ax, labels: list[str], stats: list[tuple[float, float, float]], colors: list[str], unit: str) -> None:
    medians = [m for m, _, _ in stats]
    below = [m - lo for m, lo, _ in stats]
    above = [hi - m for m, _, hi in stats]
    ax.bar(labels, medians, color=colors, yerr=[below, above], capsize=4)
    for x, (m, _, hi) in enumerate(stats):  # above the whisker, so they do not cross
        ax.annotate(_number(m), (x, hi), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
    ax.set_ylim(0, max(hi for _, _, hi in stats) * 1.15)  # room for the labels
    ax.set_ylabel(unit)
    ax.tick_params(axis="x", labelsize=8)


def _systems(summary: dict, metric: str) -> tuple[list[str], list[tuple[float, float, float]], list[str]]:
    labels, stats, colors = [], [], []
    for key, label in SYSTEMS:
        s = _stat(summary, f"{key}_{metric}")
        if s is not None:
            labels.append(label)
            stats.append(s)
            colors.append(COLORS[key])
    return labels, stats, colors


def throughput(result: dict, path: Path) -> Path:
    summary = result["summary"]
    panels = [
        ("tcp_gbps", "TCP", "Gbit/s"),
        ("tcp_loss_gbps", "TCP at 1 % random loss", "Gbit/s"),
        ("udp_received_mbps", "UDP at <= 1 % loss", "Mbit/s"),
        ("rtt_ms", "idle RTT (lower is better)", "ms"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(14, 4))
    for ax, (metric, title, unit) in zip(axes, panels, strict=True):
        labels, stats, colors = _systems(summary, metric)
        _bars(ax, labels, stats, colors, unit)
        ax.set_title(title, fontsize=10)
    fig.suptitle("Plain routing, Nebula and CYPHONIC in one run (median, min-max whiskers)", fontsize=11)
    return _save(fig, result, path, rect=(0, 0.04, 1, 0.95))


def cpu(result: dict, path: Path) -> Path:
    summary = result["summary"]
    labels, stats, colors = _systems(summary, "cpu_s_per_gbit")
    fig, ax = plt.subplots(figsize=(5, 4))
    _bars(ax, labels, stats, colors, "CPU-s per Gbit (lower is better)")
    ax.set_title("CPU of the tunnel processes per Gbit of TCP", fontsize=10)
    return _save(fig, result, path)


def relay(result: dict, path: Path) -> Path | None:
    summary = result["summary"]
    rows = [
        ("relay_direct_tcp_gbps", "a1 -> b1 direct"),
        ("relay_relayed_tcp_gbps", "a1 -> b1 relayed"),
        ("relay_v6cn_tcp_gbps", "v6 -> cn relayed"),
    ]
    present = [(label, s) for key, label in rows if (s := _stat(summary, key)) is not None]
    if not present:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    _bars(
        ax,
        [p[0] for p in present],
        [p[1] for p in present],
        ["#e15759", "#f28e2b", "#f1ce63"][: len(present)],
        "Gbit/s",
    )
    ax.set_title("CYPHONIC TCP: hole-punched direct vs through the TRS", fontsize=10)
    return _save(fig, result, path)


def handover(result: dict, path: Path) -> Path | None:
    kinds = (result.get("handover") or {}).get("summary") or {}
    present = []
    for kind, label in (("same_family", "same family"), ("napt", "to/from NAPT"), ("family", "across families")):
        s = _stat(kinds.get(kind) or {}, "gap_ms")
        if s is not None:
            present.append((label, s))
    if not present:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    _bars(ax, [p[0] for p in present], [p[1] for p in present], ["#e15759"] * len(present), "longest ping gap, ms")
    nebula = _stat(kinds.get("nebula_same_family") or {}, "gap_ms")
    title = "CYPHONIC handover: mn moves while it pings cn every 10 ms"
    if nebula is not None:
        title += f"\n(Nebula 1.6.1, same family: {nebula[0] / 1000:.1f} s, off this scale)"
    ax.set_title(title, fontsize=10)
    return _save(fig, result, path)


def render(result: dict, out: Path, stem: str) -> list[Path]:
    """Every chart the run has data for, as <out>/<stem>-<chart>.png."""
    out.mkdir(parents=True, exist_ok=True)
    made = [throughput(result, out / f"{stem}-throughput.png"), cpu(result, out / f"{stem}-cpu.png")]
    for chart in (relay, handover):
        path = chart(result, out / f"{stem}-{chart.__name__}.png")
        if path is not None:
            made.append(path)
    return made


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.charts", description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="a run's JSON (bench/results/*.json)")
    ap.add_argument("--out", type=Path, help="where the PNGs go (default: next to the JSON)")
    args = ap.parse_args(argv)
    result = json.loads(args.results.read_text())
    for path in render(result, args.out or args.results.parent, args.results.stem):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
