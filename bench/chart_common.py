"""What every bench chart shares (bench/charts.py and the chart_*.py modules):
the systems and paths a run can hold, their labels and colours, the footer
naming the machine, and bar helpers with min-max whiskers.

Kept apart from charts.py so the chart modules import it without importing
charts.py (whose `render` imports them).
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

Stat = tuple[float, float, float]  # median, min, max

# mn -> cn paths (key prefix, plain name, environment key holding a version)
MN_CN = (
    ("plain", "plain routing", None),
    ("nebula", "Nebula", "nebula"),
    ("wireguard", "wireguard-go", "wireguard_go"),
    ("openvpn", "OpenVPN", "openvpn"),
    ("cyphonic", "CYPHONIC", None),
)
# a1 -> b1 across two NAPTs (and v6 -> cn, also through the TRS); Nebula first: the reference
RELAY = (
    ("relay_nebula_direct", "Nebula punched"),
    ("relay_nebula_relayed", "Nebula via its relay"),
    ("relay_direct", "CYPHONIC punched"),
    ("relay_relayed", "CYPHONIC via TRS"),
    ("relay_v6cn", "CYPHONIC v6 -> v4 NAPT, TRS"),
)
ADAPTER = (
    ("adapter_gn", "gn1 via CYPHONIC adapter"),
    ("adapter_node", "CYPHONIC node mn"),
)
COLORS = {
    "plain": "#9e9e9e",
    "nebula": "#4e79a7",
    "wireguard": "#59a14f",
    "openvpn": "#b07aa1",
    "cyphonic": "#e15759",
    "relay_nebula_direct": "#4e79a7",
    "relay_nebula_relayed": "#a0cbe8",
    "relay_direct": "#e15759",
    "relay_relayed": "#f28e2b",
    "relay_v6cn": "#edc948",
    "adapter_gn": "#ff9da7",
    "adapter_node": "#e15759",
}


def stat(summary: dict | None, key: str) -> Stat | None:
    """(median, min, max) of a summary entry; None when the run has no such figure."""
    s = (summary or {}).get(key)
    if not isinstance(s, dict) or s.get("median") is None:
        return None
    m = s["median"]
    # an entry made by hand (or by a stage that keeps only the median) may lack min/max
    lo = s["min"] if s.get("min") is not None else m
    hi = s["max"] if s.get("max") is not None else m
    return float(m), float(lo), float(hi)


def version(environment: dict | None, key: str | None) -> str | None:
    """The version number in environment[key] ("OpenVPN 2.6.3 x86_64 ..." -> "2.6.3")."""
    raw = (environment or {}).get(key) if key else None
    if not isinstance(raw, str):
        return None
    m = re.search(r"\d+(?:\.\d+)+", raw)  # the number only: "v0.0.20230223-debian" -> "0.0.20230223"
    return m.group(0) if m else (raw.strip()[:16] or None)


def mn_cn_label(result: dict, prefix: str, sep: str = " ") -> str:
    """Plain name plus the version the run recorded, e.g. "Nebula 1.6.1"."""
    for key, name, env_key in MN_CN:
        if key == prefix:
            v = version(result.get("environment"), env_key)
            return f"{name}{sep}{v}" if v else name
    return prefix


def footer(fig, result: dict) -> None:
    env = result.get("environment") or {}
    commit = (env.get("git_commit") or "")[:7]
    fig.text(
        0.01,
        0.01,
        f"{env.get('cpu_model', '?')} x {env.get('cpus', '?')}, kernel {env.get('kernel', '?')}, "
        f"commit {commit}, {result.get('started_utc', '')}",
        fontsize=7,
        color="#555555",
    )


def save(fig, result: dict, path: Path, rect: tuple = (0, 0.05, 1, 1)) -> Path:
    footer(fig, result)
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def number(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def bars(ax, labels: list[str], stats: list[Stat], colors: list[str], unit: str) -> None:
    """Vertical bars, median with min-max whiskers, each labelled above its whisker."""
    if not stats:  # an empty panel says so instead of failing on max() of nothing
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="#777777")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    medians = [m for m, _, _ in stats]
    below = [m - lo for m, lo, _ in stats]
    above = [hi - m for m, _, hi in stats]
    ax.bar(range(len(stats)), medians, color=colors, yerr=[below, above], capsize=4)
    ax.set_xticks(range(len(stats)), labels)
    for x, (m, _, hi) in enumerate(stats):  # above the whisker, so they do not cross
        ax.annotate(number(m), (x, hi), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
    ax.set_ylim(0, max(hi for _, _, hi in stats) * 1.15 or 1)  # room for the labels
    ax.set_ylabel(unit)
    ax.tick_params(axis="x", labelsize=7.5 if len(stats) > 3 else 8)


def hbars(ax, rows: list[tuple[str, Stat | None, str | None, str]], unit: str, pad: float = 1.35) -> None:
    """Horizontal bars top to bottom: rows of (label, stat, colour, text after the whisker).

    A row with colour None is a group heading (bold label, no bar); one with
    stat None has no figure in this panel. Horizontal, so long labels stay
    readable when there are many bars in a narrow figure.
    """
    ys = list(range(len(rows)))[::-1]
    top = max((s[2] for _, s, _, _ in rows if s is not None), default=1.0) or 1.0
    for y, (_, s, color, text) in zip(ys, rows, strict=True):
        if s is None:
            if color is not None:
                ax.annotate("–", (0, y), textcoords="offset points", xytext=(4, 0), va="center", fontsize=7.5)
            continue
        m, lo, hi = s
        ax.barh(y, m, color=color, xerr=[[m - lo], [hi - m]], capsize=3, height=0.7)
        ax.annotate(text, (hi, y), textcoords="offset points", xytext=(4, 0), va="center", fontsize=7.5)
    ax.set_yticks(ys, [r[0] for r in rows])
    # (not strict: a shared y axis may hand back its labels in a different number)
    for tick, (_, _, color, _) in zip(ax.get_yticklabels(), rows, strict=False):
        if color is None:
            tick.set_fontweight("bold")
    ax.set_xlim(0, top * pad)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel(unit)
    ax.tick_params(axis="y", labelsize=8, length=0)
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
