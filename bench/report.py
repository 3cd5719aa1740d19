"""The machine a run was made on, and the JSON and Markdown files it leaves."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from .stats import fmt

REPO = Path(__file__).resolve().parent.parent


def _run(argv: list[str], strip: bool = True) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=REPO).stdout
        return out.strip() if strip else out
    except (OSError, subprocess.TimeoutExpired):
        return ""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict:
    """Where and on what code the numbers were taken.

    The daemons run from the working tree, which other people may be editing:
    `dirty_cyphonic` lists the files under cyphonic/ that differ from the commit.
    """
    # Porcelain lines are "XY path": no strip, or the first line loses its X column.
    dirty = _run(["git", "status", "--porcelain", "--", "cyphonic"], strip=False).splitlines()
    return {
        "kernel": platform.release(),
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "iperf3": _run(["iperf3", "--version"]).splitlines()[0] if shutil.which("iperf3") else None,
        "git_commit": _run(["git", "rev-parse", "HEAD"]),
        "git_describe": _run(["git", "describe", "--always", "--dirty"]),
        "dirty_cyphonic": [line[3:] for line in dirty],
        "other_namespaces": None,  # filled in by run.py: labs of other people share the CPUs
    }


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


# Rows of the table, in order: (metric key, label). Keys not in the summary are skipped.
ROWS: list[tuple[str, str]] = [
    ("plain_tcp_gbps", "TCP, plain routing cn -> 198.51.100.10 (through NAPT)"),
    ("overlay_tcp_gbps", "TCP, overlay mn -> cn.cyphonic.test"),
    ("overlay_tcp_vs_plain_pct", "TCP overlay / plain (same repetition)"),
    ("overlay_tcp_retransmits", "TCP overlay retransmits per run"),
    ("cpu_s_per_gbit", "CPU of both node daemons per Gbit (overlay TCP)"),
    ("cpu_s_per_gbit_mn", "  of which mn (sender)"),
    ("cpu_s_per_gbit_cn", "  of which cn (receiver)"),
    ("daemon_cpu_pct", "both daemons during overlay TCP (100% = one core)"),
    ("plain_tcp_daemon_cpu_s", "daemons' CPU during plain TCP (should be ~0)"),
    ("overlay_udp_max_mbps", "UDP overlay: highest offered rate with <= 1% loss"),
    ("overlay_udp_received_mbps", "UDP overlay: highest received rate with <= 1% loss"),
    ("plain_udp_max_mbps", "UDP plain: highest offered rate with <= 1% loss"),
    ("plain_udp_received_mbps", "UDP plain: highest received rate with <= 1% loss"),
    ("overlay_rtt_ms", "RTT, ping mn -> cn.cyphonic.test (avg of a run)"),
    ("plain_rtt_ms", "RTT, ping cn -> 198.51.100.10 (avg of a run)"),
    ("overlay_rtt_added_ms", "RTT added by the overlay (same repetition)"),
    ("route_selection_ms", "route selection (mn daemon timer)"),
    ("tunnel_establishment_ms", "tunnel establishment (mn daemon timer)"),
    ("dns_first_query_ms", "dig, first query after restart (route + tunnel)"),
    ("dns_first_overhead_ms", "  of which not route selection or tunnel"),
    ("dns_cached_query_ms", "dig, second query (tunnel up)"),
    ("restart_to_registered_s", "mn daemon start -> registered"),
    ("daemon_stop_s", "mn daemon SIGTERM -> exited"),
]


def markdown(result: dict) -> str:
    env = result["environment"]
    cfg = result["config"]
    summary = result["summary"]
    lines = [
        f"# CYPHONIC bench, {result['started_utc']}",
        "",
        f"- date (UTC): {result['started_utc']} (took {result['duration_s']:.0f} s)",
        f"- kernel: {env['kernel']}",
        f"- CPU: {env['cpu_model']} x {env['cpus']}",
        f"- git commit: {env['git_commit']} ({env['git_describe']})"
        + (f"; working tree differs in {len(env['dirty_cyphonic'])} file(s) under cyphonic/"
           if env["dirty_cyphonic"] else ""),
        f"- mode: {'quick' if cfg['quick'] else 'full'}; {cfg['repetitions']} interleaved "
        f"repetitions; TCP {cfg['tcp_seconds']} s, UDP steps {cfg['udp_seconds']} s "
        f"(-l {cfg['udp_length']}, tun MTU {cfg['tun_mtu']}), ping -c {cfg['ping_count']} "
        f"-i {cfg['ping_interval']}; {cfg['restarts']} daemon restarts",
        f"- load average before / after: {result['loadavg_before']} / {result['loadavg_after']}",
        "",
        "| metric | median | min | max | p99 | n | unit |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for key, label in ROWS:
        s = summary.get(key)
        if s is None:
            continue
        lines.append(f"| {label} | {fmt(s['median'])} | {fmt(s['min'])} | {fmt(s['max'])} | "
                     f"{fmt(s.get('p99'))} | {s['n']} | {s['unit']} |")
    notes = result.get("notes", [])
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write(result: dict, out: Path, stamp: str, latest: bool) -> list[Path]:
    """<stamp>.json and <stamp>.md, and (for a complete run) latest.json / latest.md."""
    out.mkdir(parents=True, exist_ok=True)
    text_json = json.dumps(result, indent=1, sort_keys=False) + "\n"
    text_md = markdown(result)
    written = []
    names = [stamp] + (["latest"] if latest else [])
    for name in names:
        for suffix, text in ((".json", text_json), (".md", text_md)):
            path = out / f"{name}{suffix}"
            tmp = path.with_suffix(suffix + ".tmp")
            tmp.write_text(text)
            tmp.replace(path)
            written.append(path)
    return written
