"""`cyphonic status` for people: a header per daemon and one table line per
peer, as `wg show` and `tailscale status` read. Pure: a status document in
(the same one `--json` prints), text out. Given the previous sample and the
seconds between the two, byte columns also show a rate (`--watch`)."""

from __future__ import annotations

import json
import time
from typing import Any

Sample = dict[str, Any]
UNITS = ("KiB", "MiB", "GiB", "TiB")


def _address(vip: str | None) -> str:
    """A virtual IP, or "-" where there is none (a peer without IPv6 reports "::")."""
    return "-" if not vip or vip in ("::", "0.0.0.0") else vip


def size(n: float) -> str:
    """1536 -> '1.5 KiB': binary units, three significant digits at most."""
    if n < 1024:
        return f"{n:.0f} B"
    for unit in UNITS:
        n /= 1024
        if n < 1024 or unit == UNITS[-1]:
            return f"{n:.1f} {unit}" if n < 100 else f"{n:.0f} {unit}"
    raise AssertionError("unreachable")


def duration(seconds: float) -> str:
    """75 -> '1m15s': the two largest units, as uptime and ages read."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Columns two spaces apart, so a cell may hold single spaces and a
    script can still split a line on runs of two or more."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]


def traffic(peer: Sample, way: str, before: Sample | None, elapsed: float | None) -> str:
    """'3.9 KiB (4 pkts)', and ', 1.2 MiB/s' when there is a previous sample."""
    text = size(peer[f"{way}_bytes"])
    if f"{way}_packets" in peer:
        text += f" ({_count(peer[f'{way}_packets'], 'pkt')})"
    if before is not None and elapsed:
        rate = max(0, peer[f"{way}_bytes"] - before[f"{way}_bytes"]) / elapsed
        text += f", {size(rate)}/s"
    return text


def drops_line(drops: dict[str, int]) -> list[str]:
    """Drops by reason, the most frequent first; nothing when there are none."""
    if not drops:
        return []
    reasons = sorted(drops.items(), key=lambda kv: (-kv[1], kv[0]))
    return ["", f"drops: {sum(drops.values())} (" + ", ".join(f"{reason} {n}" for reason, n in reasons) + ")"]


def _registered(s: Sample) -> str:
    regs: dict = s.get("registrations") or {}
    if not s.get("registered"):
        return "registered: no"
    seen = ", ".join(f"{family} seen as {r['observed']}" for family, r in sorted(regs.items()))
    nat = any(r.get("nat") for r in regs.values()) if regs else s.get("nat")
    text = "registered: yes" + (f" ({seen})" if seen else "")
    return text + ("" if nat is None else f"  NAT: {'yes' if nat else 'no'}")


def _data_path(s: Sample) -> str:
    d = s.get("dataplane") or {}
    parts = [d.get("path", "?"), f"{d.get('packet_loops', '?')} loops"]
    if d.get("data_thread"):
        parts.append("data thread")
    if d.get("ciphers"):
        parts.append("ciphers offered " + ", ".join(d["ciphers"]))
    return "data path: " + ", ".join(parts)


def _identity_header(role: str, s: Sample) -> list[str]:
    head = f"{role} {s.get('fqdn') or '(not logged in)'}  vip4 {s.get('vip4') or '-'}  vip6 {s.get('vip6') or '-'}"
    local = [f"listen port {s['listen_port']}"] if s.get("listen_port") else []
    if s.get("tun"):
        local.append(f"tun {s['tun']}")
    if s.get("lan"):
        local.append(f"LAN {s['lan']} ({s.get('mac', '?')})")
    return [
        head + f"  up {duration(s.get('uptime', 0))}",
        "  " + _registered(s) + ("  " + ", ".join(local) if local else ""),
        "  " + _data_path(s),
    ] + ["  " + line for line in mobility_lines(s.get("mobility"))]


PEER_HEADER = ["PEER", "VIP4", "VIP6", "PATH", "ENDPOINT", "CIPHER", "HANDSHAKE", "RX", "TX"]


def _peer_row(p: Sample, before: Sample | None, elapsed: float | None) -> list[str]:
    row = [p["fqdn"], p.get("vip4") or "-", _address(p.get("vip6")), p["path"], p["endpoint"] or "-"]
    row += [p.get("cipher", "-"), f"{duration(p['last_handshake'])} ago"]
    row += [traffic(p, "rx", before, elapsed), traffic(p, "tx", before, elapsed)]
    if "drops" in p:  # per-peer drops, where a status has them
        d = p["drops"]
        row.append(str(sum(d.values()) if isinstance(d, dict) else d))
    return row


def _peer_table(peers: list[Sample], previous: list[Sample], elapsed: float | None, first: list[str]) -> list[str]:
    """`first` names extra leading cells per peer ('_owner'), for the adapter."""
    before = {(p.get("_owner"), p["fqdn"]): p for p in previous}
    header = first + PEER_HEADER + (["DROPS"] if any("drops" in p for p in peers) else [])
    rows = []
    for p in peers:
        cells = [p["_owner"]] if first else []
        row = cells + _peer_row(p, before.get((p.get("_owner"), p["fqdn"])), elapsed)
        rows.append(row + ["-"] * (len(header) - len(row)))
    return table(header, rows)


def format_node(s: Sample, previous: Sample | None = None, elapsed: float | None = None) -> str:
    lines = _identity_header("node", s) + [""]
    if s["peers"]:
        lines += _peer_table(s["peers"], (previous or {}).get("peers", []), elapsed, [])
    else:
        lines.append("no peers")
    return "\n".join(lines + drops_line(s.get("drops") or {}))


def _adapter_peers(s: Sample) -> list[Sample]:
    return [{**p, "_owner": gn["fqdn"]} for gn in s.get("general_nodes", []) for p in gn["peers"]]


def format_adapter(s: Sample, previous: Sample | None = None, elapsed: float | None = None) -> str:
    lines = _identity_header("adapter", s)
    frames = s.get("lan_frames")
    if frames:
        lines.append(f"  LAN frames: {frames['in']} in, {frames['out']} out")
    lines.append("")
    rows = []
    for gn in s["general_nodes"]:
        lease = f"{duration(gn['lease_expires'])} left" if gn["lease_expires"] is not None else "-"
        rows.append([gn["fqdn"], gn["mac"], gn["vip4"] or "-", gn["vip6"] or "-", gn.get("state", "-"), lease])
        rows[-1] += [size(gn["rx_bytes"]), size(gn["tx_bytes"]), str(len(gn["peers"]))]
    if rows:
        lines += table(["GENERAL NODE", "MAC", "VIP4", "VIP6", "STATE", "LEASE", "RX", "TX", "PEERS"], rows)
    else:
        lines.append("no general nodes")
    peers = _adapter_peers(s)
    if peers:
        before = _adapter_peers(previous) if previous else []
        lines += [""] + _peer_table(peers, before, elapsed, ["GENERAL NODE"])
    return "\n".join(lines + drops_line(s.get("drops") or {}))


def format_cloud(s: Sample) -> str:
    enrolled = s.get("enrollments")
    registered = {n["fqdn"]: n for n in s.get("nodes", [])}
    head = f"cloud {s['domain']}  up {duration(s['uptime'])}  {len(registered)} registered"
    lines = [head + (f", {len(enrolled)} enrolled" if isinstance(enrolled, list) else "")]
    if isinstance(enrolled, str):  # the AS could not read its database
        lines.append(f"  enrollments: {enrolled}")
    known = {e["fqdn"]: e for e in enrolled} if isinstance(enrolled, list) else {}
    known.update(registered)
    rows = []
    for fqdn in sorted(known):
        n = known[fqdn]
        att = registered.get(fqdn, {}).get("attachments", {})
        where = [f"{fam} {a['observed']}{' (NAT)' if a['nat'] else ''}" for fam, a in sorted(att.items())]
        rows.append([fqdn, n["vip4"], n["vip6"], ", ".join(where) or "not registered"])
    lines += [""] + (table(["NODE", "VIP4", "VIP6", "REGISTERED FROM"], rows) if rows else ["no nodes"])
    return "\n".join(lines + drops_line(s.get("drops") or {}))


def format_trs(s: Sample) -> str:
    sessions = s["sessions"]
    lines = [f"TRS  up {duration(s['uptime'])}  {_count(len(sessions), 'relay session')}", ""]
    rows = []
    for r in sessions:
        ends = []
        for side in ("initiator", "responder"):
            v = r["sides"].get(side)
            ends.append(f"{v['endpoint'] or '-'} ({_count(v['packets'], 'pkt')}, {size(v['bytes'])})" if v else "-")
        rows.append([r["session"], duration(r.get("age", 0)), duration(r["idle"]), *ends])
    lines += table(["SESSION", "AGE", "IDLE", "INITIATOR", "RESPONDER"], rows) if rows else ["no relay sessions"]
    return "\n".join(lines + drops_line(s.get("drops") or {}))


def format_status(s: Sample, previous: Sample | None = None, elapsed: float | None = None) -> str:
    """Any daemon's status document; `previous` and `elapsed` add rates."""
    role = s.get("role")
    if role == "node":
        return format_node(s, previous, elapsed)
    if role == "adapter":
        return format_adapter(s, previous, elapsed)
    if role == "cloud":
        return format_cloud(s)
    if role == "trs":
        return format_trs(s)
    return json.dumps(s, indent=2)


def mobility_lines(m: Sample | None) -> list[str]:
    """The last move, if any: when, where to, and how long until the first packet on the new path."""
    if not m:
        return []
    if m.get("offline"):
        return ["uplink: none (tunnels wait; names of peers without a tunnel fail)"]
    if not m["moves"]:
        return []
    last = m["moves"][-1]
    first = last.get("first_received_ms")
    when = time.strftime("%H:%M:%S", time.localtime(last["at"]))
    heard = f"first packet after {first:.0f} ms" if first is not None else "nothing heard since"
    return [
        f"moves: {len(m['moves'])}, the last at {when} to {', '.join(last['locators']) or 'no address'}: {heard};"
        f" paths selected again: {m['path_changes']}"
    ]
