"""The headline table: every system and path of one run side by side, one row each.

Rows are what a user chooses between (plain routing as the ceiling, Nebula,
wireguard-go, OpenVPN, CYPHONIC), grouped by the path they take through the
lab: mn -> cn (cn behind a NAPT), a1 -> b1 (each behind its own NAPT: hole
punched or relayed), and a stock device behind the CYPHONIC adapter. Each
cell is the median (min-max) of the run's interleaved repetitions; the last
column is TCP against Nebula on the same path, median of per-repetition
ratios where both were measured in the same repetition.
"""

from __future__ import annotations

from .stats import fmt

# (group, summary key prefix, label, Nebula row of the same group)
ROWS: list[tuple[str, str, str, str | None]] = [
    ("mn -> cn", "plain", "plain routing (no tunnel: the ceiling)", None),
    ("mn -> cn", "nebula", "Nebula", None),
    ("mn -> cn", "wireguard", "wireguard-go", "nebula"),
    ("mn -> cn", "openvpn", "OpenVPN", "nebula"),
    ("mn -> cn", "cyphonic", "CYPHONIC (reverse: cn opens it through its NAPT)", "nebula"),
    ("a1 -> b1, two NAPTs", "relay_nebula_direct", "Nebula, hole punched (the bench opens both NAPT mappings)", None),
    ("a1 -> b1, two NAPTs", "relay_nebula_relayed", "Nebula, through its relay (on trs)", "relay_nebula_direct"),
    ("a1 -> b1, two NAPTs", "relay_direct", "CYPHONIC, hole punched", "relay_nebula_direct"),
    ("a1 -> b1, two NAPTs", "relay_relayed", "CYPHONIC, through the TRS", "relay_nebula_direct"),
    ("v6 -> cn, IPv6 to IPv4", "relay_v6cn", "CYPHONIC, through the TRS", None),
    ("gn1 -> cn, stock device", "adapter_gn", "CYPHONIC adapter (gn1 runs only dhclient)", None),
    ("mn -> cn, same stage", "adapter_node", "CYPHONIC node (for the adapter row)", None),
]
COLUMNS: list[tuple[str, str]] = [
    ("TCP, Gbit/s", "tcp_gbps"),
    ("TCP at 1% loss, Gbit/s", "tcp_loss_gbps"),
    ("UDP <= 1% loss, Mbit/s", "udp_received_mbps"),
    ("idle RTT, ms", "rtt_ms"),
    ("CPU-s per Gbit", "cpu_s_per_gbit"),
]
VERSION_KEYS = {"nebula": "nebula", "wireguard": "wireguard_go", "openvpn": "openvpn"}


def cell(s: dict | None) -> str:
    if not s or s.get("median") is None:
        return "–"
    if s["n"] == 1 or s["min"] == s["max"]:
        return fmt(s["median"])
    return f"{fmt(s['median'])} ({fmt(s['min'])}-{fmt(s['max'])})"


def _label(result: dict, prefix: str, label: str) -> str:
    version = (result.get("environment") or {}).get(VERSION_KEYS.get(prefix, ""))
    return f"{label} {version}" if version and prefix in VERSION_KEYS else label


def rows(result: dict) -> list[dict]:
    """The table as data (result["headline"]): one dict per row measured in this run."""
    summary = result.get("summary") or {}
    out = []
    for group, prefix, label, versus in ROWS:
        cells = {suffix: summary.get(f"{prefix}_{suffix}") for _, suffix in COLUMNS}
        if not any(c and c.get("median") is not None for c in cells.values()):
            continue
        ratio = _ratio(result, prefix, versus)
        out.append(
            {
                "group": group,
                "key": prefix,
                "system": _label(result, prefix, label),
                **{k: (v or {}).get("median") for k, v in cells.items()},
                "cells": {k: cell(v) for k, v in cells.items()},
                "tcp_vs_nebula": ratio,
            }
        )
    return out


def _ratio(result: dict, prefix: str, versus: str | None) -> dict | None:
    """TCP / Nebula's TCP on the same path, median of the per-repetition ratios."""
    if versus is None:
        return None
    summary = result.get("summary") or {}
    if versus == "nebula" and prefix == "cyphonic":
        return summary.get("c_vs_b_tcp")
    if versus == "nebula":
        return summary.get(f"{prefix}_vs_nebula_tcp")
    return summary.get(f"{prefix}_vs_nebula_direct_tcp")


def markdown(result: dict) -> list[str]:
    table = rows(result)
    if not table:
        return []
    reps = (result.get("config") or {}).get("repetitions")
    lines = [
        "## Every system side by side",
        "",
        f"Median (min-max) of {reps} interleaved repetitions in one lab, same hosts and NAPTs for "
        "every system; inner MTU 1400 everywhere. TCP / Nebula: median of the per-repetition "
        "ratios against Nebula on the same path (a1 -> b1: Nebula hole punched). CPU-s per Gbit: "
        "the tunnel processes at both ends (and the relay's, when relayed) over the TCP run. "
        "\u2013: not measured for that row. bench/README.md explains every row.",
        "",
        "| path | system | " + " | ".join(c for c, _ in COLUMNS) + " | TCP / Nebula |",
        "|---|---|" + "---:|" * (len(COLUMNS) + 1),
    ]
    for row in table:
        lines.append(
            f"| {row['group']} | {row['system']} | "
            + " | ".join(row["cells"][k] for _, k in COLUMNS)
            + f" | {cell(row['tcp_vs_nebula'])} |"
        )
    return lines + [""]
