"""The machine a run was made on, and the JSON and Markdown files it leaves."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from . import adapter_report, handover_report, headline, scaling_report
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


def write_stage(out: Path, name: str, started: datetime, result: dict, text: str) -> None:
    """A stage run on its own: <name>-<stamp>.{json,md} and <name>-latest.*, then the table."""
    out.mkdir(parents=True, exist_ok=True)
    for stem in (f"{name}-{started.strftime('%Y%m%dT%H%M%SZ')}", f"{name}-latest"):
        (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / f"{stem}.md").write_text(text)
    print(text)


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


PATH_LABELS = {"plain": "A: plain routing", "nebula": "B: Nebula", "cyphonic": "C: CYPHONIC"}
OTHER_LABELS = {"wireguard": "wireguard-go", "openvpn": "OpenVPN"}

# The A/B/C table: (label, metric suffix of "<path>_<suffix>", ratio key "c_vs_b_<name>").
ABC_ROWS: list[tuple[str, str, str]] = [
    ("TCP, Gbit/s", "tcp_gbps", "tcp"),
    ("TCP at 1% random loss, Gbit/s", "tcp_loss_gbps", "tcp_loss"),
    ("UDP, highest received rate with <= 1% loss, Mbit/s", "udp_received_mbps", "udp"),
    ("idle RTT (ping avg), ms", "rtt_ms", "rtt"),
    ("CPU-s per Gbit, tunnel processes (TCP run)", "cpu_s_per_gbit", "cpu"),
]

# Rows of the details table, in order: (metric key, label). Keys not in the summary are skipped.
ROWS: list[tuple[str, str]] = [
    ("plain_tcp_retransmits", "TCP retransmits per run, A plain"),
    ("nebula_tcp_retransmits", "TCP retransmits per run, B Nebula"),
    ("cyphonic_tcp_retransmits", "TCP retransmits per run, C CYPHONIC"),
    ("plain_tcp_loss_retransmits", "TCP at 1% loss, retransmits, A plain"),
    ("nebula_tcp_loss_retransmits", "TCP at 1% loss, retransmits, B Nebula"),
    ("cyphonic_tcp_loss_retransmits", "TCP at 1% loss, retransmits, C CYPHONIC"),
    ("plain_loss_applied_pct", "loss applied, A plain (nft, per GRO aggregate)"),
    ("nebula_loss_applied_pct", "loss applied, B Nebula (nft, per outer datagram)"),
    ("cyphonic_loss_applied_pct", "loss applied, C CYPHONIC (test hook, approx.)"),
    ("wireguard_tcp_retransmits", "TCP retransmits per run, wireguard-go"),
    ("openvpn_tcp_retransmits", "TCP retransmits per run, OpenVPN"),
    ("wireguard_loss_applied_pct", "loss applied, wireguard-go (nft, per outer datagram)"),
    ("openvpn_loss_applied_pct", "loss applied, OpenVPN (nft, per outer datagram)"),
    ("nebula_tcp_vs_plain_pct", "TCP B Nebula / A plain (same repetition)"),
    ("wireguard_tcp_vs_plain_pct", "TCP wireguard-go / A plain (same repetition)"),
    ("openvpn_tcp_vs_plain_pct", "TCP OpenVPN / A plain (same repetition)"),
    ("cyphonic_tcp_vs_plain_pct", "TCP C CYPHONIC / A plain (same repetition)"),
    ("nebula_cpu_s_per_gbit_mn", "CPU per Gbit, B Nebula, mn (sender)"),
    ("nebula_cpu_s_per_gbit_cn", "CPU per Gbit, B Nebula, cn (receiver)"),
    ("cyphonic_cpu_s_per_gbit_mn", "CPU per Gbit, C CYPHONIC, mn (sender)"),
    ("cyphonic_cpu_s_per_gbit_cn", "CPU per Gbit, C CYPHONIC, cn (receiver)"),
    ("nebula_cpu_pct", "B Nebula processes during TCP (100% = one core)"),
    ("cyphonic_cpu_pct", "C CYPHONIC daemons during TCP (100% = one core)"),
    ("wireguard_cpu_pct", "wireguard-go processes during TCP (100% = one core)"),
    ("openvpn_cpu_pct", "OpenVPN processes during TCP (100% = one core)"),
    ("plain_tcp_outside_cpu_pct", "CPU of processes outside the lab during A plain TCP (kept run)"),
    ("nebula_tcp_outside_cpu_pct", "CPU of processes outside the lab during B Nebula TCP (kept run)"),
    ("cyphonic_tcp_outside_cpu_pct", "CPU of processes outside the lab during C CYPHONIC TCP (kept run)"),
    ("plain_tcp_busy_retries", "TCP runs redone for outside load, A plain"),
    ("nebula_tcp_busy_retries", "TCP runs redone for outside load, B Nebula"),
    ("cyphonic_tcp_busy_retries", "TCP runs redone for outside load, C CYPHONIC"),
    ("nebula_tcp_loss_cpu_s_per_gbit", "CPU per Gbit at 1% loss, B Nebula"),
    ("cyphonic_tcp_loss_cpu_s_per_gbit", "CPU per Gbit at 1% loss, C CYPHONIC"),
    ("plain_tcp_tunnel_cpu_s", "tunnel processes' CPU during A plain TCP (should be ~0)"),
    ("plain_udp_max_mbps", "UDP highest offered rate with <= 1% loss, A plain"),
    ("nebula_udp_max_mbps", "UDP highest offered rate with <= 1% loss, B Nebula"),
    ("cyphonic_udp_max_mbps", "UDP highest offered rate with <= 1% loss, C CYPHONIC"),
    ("nebula_rtt_added_ms", "RTT added over plain, B Nebula (same repetition)"),
    ("cyphonic_rtt_added_ms", "RTT added over plain, C CYPHONIC (same repetition)"),
    ("cyphonic_loss_switch_s", "cn+mn daemon restart -> tunnel up again (loss hook on/off)"),
    ("route_selection_ms", "route selection (mn daemon timer)"),
    ("tunnel_establishment_ms", "tunnel establishment (mn daemon timer)"),
    ("dns_first_query_ms", "dig, first query after restart (route + tunnel)"),
    ("dns_first_overhead_ms", "  of which not route selection or tunnel"),
    ("dns_cached_query_ms", "dig, second query (tunnel up)"),
    ("restart_to_registered_s", "mn daemon start -> registered"),
    ("daemon_stop_s", "mn daemon SIGTERM -> exited"),
]


# The relayed-vs-direct table: (label, metric suffix of "relay_<pair>_<suffix>", ratio name).
RELAY_ROWS: list[tuple[str, str, str | None]] = [
    ("TCP, Gbit/s", "tcp_gbps", "tcp"),
    ("idle RTT (ping avg), ms", "rtt_ms", "rtt"),
    ("TRS process CPU-s per Gbit (TCP run)", "trs_cpu_s_per_gbit", None),
    ("TRS process CPU, % of a core (TCP run)", "trs_cpu_pct", None),
    ("CPU-s per Gbit, all tunnel processes (nodes + TRS)", "cpu_s_per_gbit", None),
    ("TCP retransmits per run", "tcp_retransmits", None),
    ("CPU of processes outside the lab during TCP, % of a core", "tcp_outside_cpu_pct", None),
]
RELAY_PAIRS = {
    "direct": "a1 -> b1 direct (punched)",
    "relayed": "a1 -> b1 relayed (TRS, no punch)",
    "v6cn": "v6 -> cn relayed (TRS, IPv6 <-> IPv4)",
}
RELAY_EXTRA = [
    ("relay_switch_s", "a1+b1 daemon restart (hole_punching flipped) -> registered"),
    ("relay_punch_s", "a1 -> b1: first ping answered -> path direct (after restart)"),
]


def labels() -> dict[str, str]:
    """A description for every summarized key."""
    out = dict(ROWS)
    for label, suffix, ratio in RELAY_ROWS:
        for pair, name in RELAY_PAIRS.items():
            out[f"relay_{pair}_{suffix}"] = f"{label.split(',')[0]}, {name}"
        if ratio:
            out[f"relay_ratio_{ratio}"] = f"{label.split(',')[0]}, relayed/direct a1 -> b1"
            out[f"relay_ratio_v6cn_{ratio}"] = f"{label.split(',')[0]}, v6->cn relayed / a1->b1 direct"
    out.update(RELAY_EXTRA)
    for label, suffix, ratio in ABC_ROWS:
        for path, name in PATH_LABELS.items():
            out[f"{path}_{suffix}"] = f"{label.split(',')[0]}, {name}"
        out[f"c_vs_b_{ratio}"] = f"{label.split(',')[0]}, C/B (same repetition)"
        for path, name in OTHER_LABELS.items():
            out[f"{path}_{suffix}"] = f"{label.split(',')[0]}, {name}"
            out[f"{path}_vs_nebula_{ratio}"] = f"{label.split(',')[0]}, {name} / Nebula (same repetition)"
    return out


def _cell(s: dict | None) -> str:
    if not s or s.get("median") is None:
        return "-"
    if s["n"] == 1:
        return fmt(s["median"])
    return f"{fmt(s['median'])} ({fmt(s['min'])}-{fmt(s['max'])})"


def abc_table(result: dict) -> list[str]:
    summary = result["summary"]
    goals = result.get("goals") or {}
    neb = (result.get("environment") or {}).get("nebula") or ""
    n = max((summary.get(f"{p}_tcp_gbps") or {}).get("n", 0) for p in PATH_LABELS)
    lines = [
        f"median (min-max) of {n} interleaved repetitions (A B C A B C ...); every path carries "
        "the data mn -> cn; C/B is the median of the per-repetition ratios.",
        "",
        f"| metric | A: plain routing | B: Nebula {neb} | C: CYPHONIC | C/B | goal | met |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for label, suffix, ratio in ABC_ROWS:
        g = goals.get(ratio)
        met = "-" if not g or g["met"] is None else ("yes" if g["met"] else "**no**")
        lines.append(
            f"| {label} | {_cell(summary.get(f'plain_{suffix}'))} | "
            f"{_cell(summary.get(f'nebula_{suffix}'))} | {_cell(summary.get(f'cyphonic_{suffix}'))} | "
            f"{_cell(summary.get(f'c_vs_b_{ratio}'))} | "
            f"{g['goal'] if g else '(lower is better)'} | {met} |"
        )
    return lines


def relay_table(result: dict) -> list[str]:
    summary = result["summary"]
    if "relay_direct_tcp_gbps" not in summary:
        return []
    g = (result.get("goals") or {}).get("relay_tcp") or {}
    n = (summary.get("relay_direct_tcp_gbps") or {}).get("n", 0)
    mtu = (result.get("relay") or {}).get("tun_mtu") or {}
    lines = [
        "## CYPHONIC relayed (TRS) vs direct (hole punched)",
        "",
        f"median (min-max) of {n} repetitions, in the same run, interleaved with A B C; a1 and b1 "
        "are behind two NAPTs; relayed = a1's and b1's daemons restarted with hole_punching = "
        "false (one switch per repetition, order alternating); each run checked the peer's path "
        "before and after. Ratios are medians of per-repetition ratios. TUN MTU: "
        + ", ".join(f"{h} {m}" for h, m in mtu.items())
        + ".",
        "",
        f"| metric | {RELAY_PAIRS['direct']} | {RELAY_PAIRS['relayed']} | relayed/direct | goal | met "
        f"| {RELAY_PAIRS['v6cn']} | v6cn/direct |",
        "|---|---:|---:|---:|---|---|---:|---:|",
    ]
    for label, suffix, ratio in RELAY_ROWS:
        goal, met = "", ""
        if ratio == "tcp" and g:
            goal = g["goal"]
            met = "-" if g["met"] is None else ("yes" if g["met"] else "**no**")
        lines.append(
            f"| {label} | {_cell(summary.get(f'relay_direct_{suffix}'))} | "
            f"{_cell(summary.get(f'relay_relayed_{suffix}'))} | "
            f"{_cell(summary.get(f'relay_ratio_{ratio}')) if ratio else ''} | {goal} | {met} | "
            f"{_cell(summary.get(f'relay_v6cn_{suffix}'))} | "
            f"{_cell(summary.get(f'relay_ratio_v6cn_{ratio}')) if ratio else ''} |"
        )
    lines.append("")
    for key, label in RELAY_EXTRA:
        s = summary.get(key)
        if s and s.get("n"):
            lines.append(f"- {label}: {_cell(s)} s (n={s['n']})")
    return lines + [""]


def _ciphers(result: dict) -> str:
    """The suite each CYPHONIC end used with the other (status after the throughput runs)."""
    status = result.get("status_after_throughput") or {}
    used = []
    for host, peer in (("mn", "cn"), ("cn", "mn")):
        rows = [p for p in ((status.get(host) or {}).get("peers") or []) if p.get("fqdn", "").startswith(peer + ".")]
        used.append(f"{host} {rows[0].get('cipher', '?') if rows else '?'}")
    return ", ".join(used)


def seed_markdown(result: dict) -> list[str]:
    """The seed paper's tables with this run's figures beside them (bench/seed.py)."""
    if not result.get("adapter"):
        return []
    from . import seed  # charts and tables are optional extras of a run

    return seed.markdown(result).splitlines() + [""]


def markdown(result: dict) -> str:
    env = result["environment"]
    cfg = result["config"]
    summary = result["summary"]
    neb = (result.get("nebula") or {}).get("settings") or {}
    lines = [
        f"# CYPHONIC bench, {result['started_utc']}",
        "",
        f"- date (UTC): {result['started_utc']} (took {result['duration_s']:.0f} s)"
        + ("" if result.get("complete") else f"; INCOMPLETE: {result.get('error')}"),
        f"- kernel: {env['kernel']}",
        f"- CPU: {env['cpu_model']} x {env['cpus']}",
        f"- ciphers: CYPHONIC {_ciphers(result)}; Nebula {neb.get('cipher', 'aes (default)')}",
        f"- git commit: {env['git_commit']} ({env['git_describe']})"
        + (
            f"; working tree differs in {len(env['dirty_cyphonic'])} file(s) under cyphonic/"
            if env["dirty_cyphonic"]
            else ""
        ),
        f"- mode: {'quick (a smoke run: n = 1, indicative only)' if cfg['quick'] else 'full'}; "
        f"{cfg['repetitions']} interleaved "
        f"repetitions; TCP {cfg['tcp_seconds']} s, UDP steps {cfg['udp_seconds']} s "
        f"(-l {cfg.get('udp_length')}, tun MTU {cfg.get('tun_mtu')}), ping -c {cfg['ping_count']} "
        f"-i {cfg['ping_interval']}; {cfg['restarts']} daemon restarts",
        f"- versions: Nebula {env.get('nebula')}, wireguard-go {env.get('wireguard_go')}, "
        f"OpenVPN {env.get('openvpn')}, {env.get('iperf3')}, Python {env.get('python')}",
        f"- command: `{env.get('command')}`",
        f"- A: iperf3 -R from cn to 198.51.100.10 (through the NAPT); B: mn -> cn's Nebula "
        f"address; C: mn -> cn.cyphonic.test (-{cfg.get('cyphonic_family')}); wireguard-go and "
        "OpenVPN: mn -> cn's address in their tunnel",
        f"- Nebula {env.get('nebula')}: lighthouse in cloud, tun.mtu {neb.get('mtu')}, "
        f"socket buffers {(neb.get('read_buffer') or 0) >> 20} MiB, cipher aes (default)",
        "- 1% loss: nft drop of 1% of cn's incoming TCP (A) or of the tunnel's outer datagrams "
        "(Nebula, wireguard-go, OpenVPN); C CYPHONIC_TEST_LOSS=0.01 on cn's daemon "
        + ("(hook present)" if env.get("loss_hook_files") else "(HOOK ABSENT)"),
        f"- load average before / after: {result['loadavg_before']} / {result['loadavg_after']}",
        "",
        *headline.markdown(result),
        "## CYPHONIC against Nebula: the data-plane goals",
        "",
        *abc_table(result),
        "",
        *relay_table(result),
        *seed_markdown(result),
        *adapter_report.markdown(result),
        *scaling_report.markdown(result),
        *handover_report.markdown(result),
        "## Details",
        "",
        "| metric | median | min | max | p99 | n | unit |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for key, label in ROWS:
        s = summary.get(key)
        if s is None or not s["n"]:
            continue
        lines.append(
            f"| {label} | {fmt(s['median'])} | {fmt(s['min'])} | {fmt(s['max'])} | "
            f"{fmt(s.get('p99'))} | {s['n']} | {s['unit']} |"
        )
    notes = result.get("notes", [])
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write(result: dict, run_dir: Path) -> list[Path]:
    """The run's directory: results.json (everything) and report.md (the tables)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("results.json", json.dumps(result, indent=1) + "\n"), ("report.md", markdown(result))):
        path = run_dir / name
        tmp = path.with_name(name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        written.append(path)
    return written


def point_latest(out: Path, stamp: str) -> None:
    """out/latest -> <stamp>/ (a relative symlink: it survives a clone) for a complete run."""
    link = out / "latest"
    tmp = out / ".latest.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(stamp, target_is_directory=True)
    tmp.replace(link)
