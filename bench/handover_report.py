"""The handover stage's figures: per kind of move the summary and goal, its
Markdown section, and the files of a run of its own (bench/handover.py)."""

from __future__ import annotations

import json
from pathlib import Path

from . import stats
from .handover import KINDS, NEBULA_KIND
from .stats import dig, fmt

LABELS = {
    "same_family": "same family: global4a <-> global4b (global IPv4 both)",
    "napt": "to/from NAPT: global4a <-> napt (behind nat-mv)",
    "family": "across families: global4a <-> ipv6only",
    NEBULA_KIND: "Nebula, same family: global4a <-> global4b",
}
METRICS = {
    "gap_ms": ("ms", "longest gap between two replies, from the last reply before the move"),
    "lost": ("pings", "10 ms pings lost after the last reply before the move"),
    "event_to_first_packet_ms": ("ms", "mn's netlink event -> first authenticated datagram (status mobility)"),
    "first_reply_after_move_ms": ("ms", "move command started -> first reply"),
    "outage_ms": ("ms", "the lab's outage: old link out of service -> new link up with routes"),
    "link_up_to_reply_ms": ("ms", "new link up with routes -> first reply (10 ms resolution)"),
    "move_s": ("s", "the whole move command, deleting the old link included"),
}


def _kind_summary(kind: dict) -> dict:
    trials = kind.get("trials") or []
    measured = [t for t in trials if t.get("baseline_ok")]
    recovered = [t for t in measured if t.get("recovered")]
    out: dict = {
        "moves": len(trials),
        "measured": len(measured),
        "unrecovered": len(measured) - len(recovered),
    }
    for key, (unit, what) in METRICS.items():
        if key == "event_to_first_packet_ms":
            values = [dig(t, "mobility", key) for t in recovered]
        else:
            values = [t.get(key) for t in recovered]
        out[key] = stats.summarize(values, unit, what)
    out["paths_after"] = [dig(t, "peer_after", "path") for t in trials]
    return out


def summarize(result: dict) -> None:
    """result["handover"]["summary"] and ["goals"] from its trials (no-op without the stage)."""
    h = result.get("handover")
    if not h:
        return
    h["summary"] = {k: _kind_summary(v) for k, v in (h.get("kinds") or {}).items()}
    goals = {}
    for kind, (_away, _what, bound) in KINDS.items():
        s = h["summary"].get(kind) or {}
        median = dig(s, "gap_ms", "median")
        met = None if not s.get("measured") else bool(median is not None and median <= bound and not s["unrecovered"])
        goals[kind] = {"goal": f"gap <= {bound:g} ms, every move", "value": median, "met": met}
    h["goals"] = goals


def _cell(s: dict | None) -> str:
    if not s or not s.get("n"):
        return "-"

    def f(v: float) -> str:  # counts as counts: 2, not 2.00
        return str(int(v)) if float(v).is_integer() else fmt(v)

    if s["n"] == 1 or s["min"] == s["max"]:
        return f(s["median"])
    return f"{f(s['median'])} ({f(s['min'])}-{f(s['max'])})"


def markdown(result: dict) -> list[str]:
    h = result.get("handover")
    if not h:
        return []
    if "summary" not in h:
        summarize(result)
    cfg = h.get("config") or {}
    lines = [
        "## Handover: mn moves while it pings cn's virtual IPv4 every 10 ms",
        "",
        f"`{cfg.get('ping')}` from mn; {cfg.get('moves_per_kind')} moves per kind, away and home in turn "
        f"(Nebula: {cfg.get('nebula_moves')}). Gap: the longest time between two replies from the last reply "
        f"before the move until {cfg.get('settle_s')} s of replies after it; it includes the lab's outage "
        "(`lab move` is break-before-make: old link out of service -> new link up with its routes). "
        "Link up -> first reply: what the overlay adds to that outage. Event -> first packet: mn's status "
        "`mobility.moves` (netlink event with the new locators -> first authenticated datagram). "
        "Median (min-max) over the moves that got a reply again. Moves: measured (of made: a move "
        "without steady replies before it is not measured). While no reply comes, ping sends ~60 a second "
        "here, not 100: lost pings understate a long gap.",
        "",
        "| move | moves | gap, ms | lost pings | lab outage, ms | link up -> first reply, ms "
        "| event -> first packet, ms | no reply again | goal | met |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for kind, k in (h.get("kinds") or {}).items():
        s = (h.get("summary") or {}).get(kind) or {}
        g = (h.get("goals") or {}).get(kind) or {}
        met = g.get("met")
        label = LABELS.get(kind, kind)
        if k.get("error") or (k.get("na") and not s.get("measured")):
            reason = k.get("error") or k.get("na")
            lines.append(f"| {label} | {s.get('moves', 0)} | {reason} | | | | | | {g.get('goal', '')} | - |")
            continue
        timeout = cfg.get("nebula_timeout_s") if kind == NEBULA_KIND else cfg.get("timeout_s")
        moves = f"{s.get('measured', 0)}" + (f" of {s['moves']}" if s.get("moves") != s.get("measured") else "")
        lines.append(
            f"| {label} | {moves} | {_cell(s.get('gap_ms'))} | {_cell(s.get('lost'))} "
            f"| {_cell(s.get('outage_ms'))} | {_cell(s.get('link_up_to_reply_ms'))} "
            f"| {_cell(s.get('event_to_first_packet_ms'))} "
            f"| {s.get('unrecovered', 0)} (within {timeout} s) | {g.get('goal', '(reference)')} "
            f"| {'-' if met is None else ('yes' if met else '**no**')} |"
        )
    notes = [f"{LABELS.get(k, k)}: {v['note']}" for k, v in (h.get("kinds") or {}).items() if v.get("note")]
    notes += [f"{LABELS.get(k, k)}: {v['na']}" for k, v in (h.get("kinds") or {}).items() if v.get("na")]
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    if not any(dig(t, "mobility", "entries") for k in (h.get("kinds") or {}).values() for t in k.get("trials") or []):
        lines += ["", "- mn's status had no `mobility.moves` entries: event -> first packet not measured."]
    return lines + [""]


def standalone_markdown(result: dict) -> str:
    env = result["environment"]
    dirty = env.get("dirty_cyphonic") or []
    lines = [
        f"# CYPHONIC handover bench, {result['started_utc']}",
        "",
        f"- date (UTC): {result['started_utc']} (took {result.get('duration_s', 0):.0f} s)"
        + ("" if result.get("complete") else f"; INCOMPLETE: {result.get('error')}"),
        f"- kernel: {env['kernel']}; CPU: {env['cpu_model']} x {env['cpus']}; Nebula {env.get('nebula')}",
        f"- git commit: {env['git_commit']} ({env['git_describe']})"
        + (f"; working tree differs in {len(dirty)} file(s) under cyphonic/" if dirty else ""),
        f"- mode: {'quick' if result['config']['quick'] else 'full'}; lab prefix {result['config']['prefix']}",
        f"- load average before / after: {result.get('loadavg_before')} / {result.get('loadavg_after')}",
        "",
        *markdown(result),
    ]
    return "\n".join(lines) + "\n"


def write(result: dict, out: Path, stamp: str, latest: bool) -> list[Path]:
    """handover-<stamp>.{json,md} and (for a complete run) handover-latest.{json,md}."""
    out.mkdir(parents=True, exist_ok=True)
    texts = {".json": json.dumps(result, indent=1) + "\n", ".md": standalone_markdown(result)}
    written = []
    for name in [f"handover-{stamp}"] + (["handover-latest"] if latest else []):
        for suffix, text in texts.items():
            path = out / f"{name}{suffix}"
            tmp = path.with_suffix(suffix + ".tmp")
            tmp.write_text(text)
            tmp.replace(path)
            written.append(path)
    return written
