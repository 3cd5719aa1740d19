"""Handover: how long mn's traffic to cn stops when mn's uplink moves (issue 15).

    .venv/bin/python -m bench.handover [--quick] [--out DIR] [--prefix P] [--moves N]

mn pings cn's virtual IPv4 every 10 ms (`ping -D -O -i 0.01`: every reply with
its receive time) while `Lab.move` takes mn's uplink to another access
network and back, N times for each kind of move (KINDS). Per move: the longest
gap between two replies from the last one before the move until the pings
have flowed again for `settle` s, the pings lost in that window, and, from
mn's status (`mobility.moves`), the daemon's own "netlink event -> first
authenticated datagram on the new path". Then Nebula, the same way, for the
same-family move, where its roaming applies. Also a stage of bench/run.py
(`--only handover`, `--handover 0` to skip). What the figures mean:
bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cyphonic.lab import Lab, LabError, down, netns

from . import nebula, probes
from .progress import log

HOST, PEER = "mn", "cn"
CN = "cn.cyphonic.test"
HOME = "home"  # mn's home is global4a
INTERVAL = 0.01
# kind -> (where mn goes and comes back from, what changes, goal for the gap in ms)
KINDS: dict[str, tuple[str, str, float]] = {
    "same_family": ("global4b", "global IPv4 <-> another global IPv4; cn behind NAPT nat-cn", 50),
    "napt": ("napt", "global <-> behind NAPT nat-mv: both ends behind NAPT, relay (TRS) then punch", 200),
    "family": ("ipv6only", "dual-stack <-> IPv6 only; cn has IPv4 only: relay (TRS)", 200),
}
NEBULA_KIND = "nebula_same_family"
MODES = {
    # timeout: s after a move without a reply before giving it up; settle: s of replies that end it
    "quick": dict(timeout=5.0, settle=0.5, nebula_moves=1),
    "full": dict(timeout=10.0, settle=1.0, nebula_moves=2),
}
MOVES = 5
BASELINE_REPLIES = 30  # consecutive replies before a move: the path works
# Nebula 1.6.1 needs about a minute here (cn's tunnel check declares the tunnel dead,
# then cn handshakes again through the lighthouse): wait for it, once.
NEBULA_TIMEOUT = 80.0
GIVE_UP_AFTER = 2  # moves in a row without a reply: the rest of that kind is skipped

_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)")
_NO_ANSWER = re.compile(r"^\[(\d+\.\d+)\] no answer yet for icmp_seq=(\d+)")


class LivePing:
    """`ping -D -O -i 0.01 target` in `host`, its replies read as they come.

    Not cyphonic.lab.handover.Pinger, which reads ping's output when it stops:
    a move here ends as soon as the pings have flowed again for `settle` s.
    """

    def __init__(self, lab: Lab, host: str, target: str) -> None:
        argv = ["ping", "-D", "-O", "-n", "-i", str(INTERVAL), "-W", "1", target]
        self.proc = lab.popen(host, argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.replies: list[tuple[float, int]] = []  # (receive time, icmp_seq)
        self.sent = 0  # the highest icmp_seq ping reported
        self.other: list[str] = []  # errors ("Network is unreachable"...), first few
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if m := _REPLY.match(line):
                self.replies.append((float(m[1]), int(m[2])))
                self.sent = max(self.sent, int(m[2]))
            elif m := _NO_ANSWER.match(line):
                self.sent = max(self.sent, int(m[2]))
            elif not line.startswith("PING") and len(self.other) < 10:
                self.other.append(line.strip())

    def wait(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                return done()
            time.sleep(INTERVAL)
        return True

    def steady(self, n: int = BASELINE_REPLIES) -> bool:
        """The last n replies came for n consecutive pings."""
        r = self.replies
        return len(r) >= n and r[-1][1] - r[-n][1] == n - 1

    def after(self, t: float) -> int:
        return sum(1 for ts, _ in self.replies if ts >= t)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)


def analyse(replies: list[tuple[float, int]], down_at: float, up_at: float, end: float) -> dict:
    """The gap and losses around a move: the old link went out of service at
    `down_at`, the new one had its routes at `up_at` (wall clock); pinging
    ended at `end`. Recovered: a reply came after `up_at`."""
    before = [r for r in replies if r[0] < down_at]
    after = [r for r in replies if r[0] >= down_at]  # a few may be in flight before the link went
    back = [r for r in after if r[0] >= up_at]
    out: dict = {"replies_before": len(before), "replies_after": len(back), "recovered": bool(back)}
    if not before:
        return {**out, "gap_ms": None, "lost": None}
    last = before[-1]
    if not back:  # silent until we gave up: the gap is at least this
        return {**out, "gap_ms": None, "silent_ms": (end - (after or before)[-1][0]) * 1000, "lost": None}
    window = [last, *after]
    gaps = [(b[0] - a[0]) * 1000 for a, b in zip(window, window[1:], strict=False)]
    answered = {seq for _, seq in after}
    return {
        **out,
        "gap_ms": max(gaps),
        "first_gap_ms": (after[0][0] - last[0]) * 1000,  # last reply before -> first after
        "first_reply_after_move_ms": (back[0][0] - down_at) * 1000,
        # what the overlay adds to the lab's own outage (10 ms resolution: the ping interval)
        "link_up_to_reply_ms": (back[0][0] - up_at) * 1000,
        # pings sent after the last reply before the move, up to the last reply, never answered
        "lost": sum(1 for seq in range(last[1] + 1, after[-1][1]) if seq not in answered),
    }


def mobility_entry(status: dict | None, start: float) -> dict:
    """mn's own view of the move: the first `mobility.moves` entry after `start`
    that names new locators (a break-before-make move first reports the old
    address gone, with none), and its netlink event -> first packet."""
    mobility = (status or {}).get("mobility")
    if not isinstance(mobility, dict):
        return {"event_to_first_packet_ms": None, "note": "no `mobility` in mn's status"}
    entries = [e for e in mobility.get("moves") or [] if (e.get("at") or 0) >= start]
    chosen = next((e for e in entries if e.get("locators")), entries[0] if entries else None)
    return {
        "event_to_first_packet_ms": (chosen or {}).get("first_received_ms"),
        "event_after_move_ms": (chosen["at"] - start) * 1000 if chosen else None,
        "entries": entries,
        "path_changes": mobility.get("path_changes"),
    }


def _peer(status: dict | None) -> dict | None:
    for p in (status or {}).get("peers") or []:
        if p.get("fqdn") == CN:
            return {k: p.get(k) for k in ("path", "endpoint")}
    return None


def trial(lab: Lab, target: str, network: str, mode: dict, timeout: float, cyphonic: bool = True) -> dict:
    """One move of mn to `network` with the pings running; raw figures."""
    ping = LivePing(lab, HOST, target)
    try:
        baseline = ping.wait(ping.steady, 5)
        start = time.time()
        moved = lab.move(HOST, network)
        up_at = moved.get("up_at", start)
        want = BASELINE_REPLIES if not baseline else int(mode["settle"] / INTERVAL)
        ping.wait(lambda: ping.after(up_at) >= want, timeout + mode["settle"])
        end = time.time()
    finally:
        ping.stop()
    out = {
        "from": moved["from"],
        "to": moved["to"],
        "move_s": moved["seconds"],
        "outage_ms": moved.get("outage_ms"),  # the lab's: old link out of service -> new one routed
        "baseline_ok": baseline,
        **analyse(ping.replies, moved.get("down_at", start), up_at, end),
        "pings_sent": ping.sent,
        "ping_errors": ping.other,
    }
    if not baseline:
        out["note"] = "not measured: no steady replies before the move"
    elif not out["recovered"]:
        out["note"] = f"no reply within {end - start:.1f} s after the move"
    if cyphonic:
        st = lab.status(HOST)
        out["mobility"] = mobility_entry(st, start)
        out["peer_after"] = _peer(st)
    return out


def series_of_moves(lab: Lab, target: str, away: str, n: int, mode: dict, timeout: float, cyphonic: bool) -> dict:
    """n moves: home -> away, away -> home, ...; then home again (not measured)."""
    trials: list[dict] = []
    out: dict = {"trials": trials}
    misses = 0
    for i in range(n):
        network = away if i % 2 == 0 else HOME
        t = trial(lab, target, network, mode, timeout, cyphonic)
        trials.append(t)
        log(f"  {t['from']} -> {t['to']}: {line(t)}")
        misses = 0 if t["recovered"] else misses + 1
        if misses >= GIVE_UP_AFTER and i + 1 < n:
            out["note"] = f"stopped after {i + 1} moves: {misses} in a row without a reply"
            break
    if lab.network(HOST) != "global4a":
        lab.move(HOST, HOME)
    return out


def line(t: dict) -> str:
    if not t["baseline_ok"] or t["gap_ms"] is None:
        return t.get("note") or "not measured: no replies before the move"
    ev = (t.get("mobility") or {}).get("event_to_first_packet_ms")
    ev_text = f", event -> first packet {ev:.0f} ms" if isinstance(ev, (int, float)) else ""
    path = (t.get("peer_after") or {}).get("path")
    out = f"gap {t['gap_ms']:.0f} ms (lab outage {t['outage_ms']:.0f}), {t['lost']} lost{ev_text}"
    return out + (f", path {path}" if path else "")


def _ready(lab: Lab, target: str, seconds: float = 30) -> None:
    """mn is home and reaches cn's `target` (LabError otherwise)."""
    if lab.network(HOST) != "global4a":
        lab.move(HOST, HOME)
    # A tunnel that a failed move closed comes back only with a route
    # selection, which a name lookup starts (a ping to the address does not).
    probes.dig(lab, HOST, CN)
    probes.wait_ping(lab, HOST, target, time.monotonic() + seconds)


def nebula_series(lab: Lab, n: int, mode: dict) -> dict:
    """Nebula (bench/nebula.py's settings) across the same-family move."""
    if not nebula.version():
        return {"na": "n/a: nebula is not installed"}
    neb = nebula.Nebula(lab, lab.paths.root / "nebula-handover")
    out: dict = {"settings": None}
    try:
        neb.setup()
        out["settings"] = neb.settings()
        out["start"] = neb.start()
        target = neb.ip(PEER)
        trials: list[dict] = []
        out["trials"] = trials
        for i in range(n):
            t = trial(lab, target, KINDS["same_family"][0] if i % 2 == 0 else HOME, mode, NEBULA_TIMEOUT, False)
            trials.append(t)
            log(f"  nebula {t['from']} -> {t['to']}: {line(t)}")
            if not t["recovered"]:
                out["na"] = f"n/a: no reply within {NEBULA_TIMEOUT:.0f} s after the move"
                break
        out["handshakes"] = neb.underlay_paths()
    except LabError as e:
        out["na"] = f"n/a: {e}"
        out["detail"] = e.detail[-2000:]
    finally:
        neb.stop()
        if lab.network(HOST) != "global4a":
            lab.move(HOST, HOME)
    return out


def stage(lab: Lab, mode: dict, result: dict) -> None:
    """The handover stage on a lab that is up: result["handover"]."""
    timing = dict(MODES["quick" if mode.get("quick") else "full"])
    moves = max(1, int(mode.get("moves") or MOVES))
    nebula_moves = int(mode["nebula_moves"] if mode.get("nebula_moves") is not None else timing["nebula_moves"])
    out = result["handover"] = {
        "config": {
            "node": HOST,
            "peer": CN,
            "ping": f"ping -D -O -i {INTERVAL} -W 1 <cn's vip4>",
            "moves_per_kind": moves,
            "timeout_s": timing["timeout"],
            "settle_s": timing["settle"],
            "baseline_replies": BASELINE_REPLIES,
            "nebula_moves": nebula_moves,
            "nebula_timeout_s": NEBULA_TIMEOUT,
            "kinds": {k: {"away": a, "what": w, "goal_gap_ms": g} for k, (a, w, g) in KINDS.items()},
        },
        "kinds": {},
    }
    vip = (lab.status(PEER) or {}).get("vip4")
    if not vip:
        raise LabError("handover: cn has no virtual IPv4 in its status")
    out["target"] = vip
    for kind, (away, what, _goal) in KINDS.items():
        log(f"handover: {kind} ({what}), moves: {moves}")
        try:
            _ready(lab, vip)
            out["kinds"][kind] = series_of_moves(lab, vip, away, moves, timing, timing["timeout"], True)
        except LabError as e:
            out["kinds"][kind] = {"error": str(e), "detail": e.detail[-2000:]}
            log(f"  {kind}: {e}")
    out["mobility_at_end"] = (lab.status(HOST) or {}).get("mobility")
    if nebula_moves > 0:
        log(f"handover: Nebula {nebula.version()}, {KINDS['same_family'][0]} and back, moves: {nebula_moves}")
        out["kinds"][NEBULA_KIND] = nebula_series(lab, nebula_moves, timing)
    from .handover_report import summarize  # it imports this module's constants

    summarize(result)


def _sigterm(signum, frame):  # noqa: ARG001
    raise SystemExit(128 + signum)  # unwinds through the finally that tears the lab down


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter waits, one Nebula move")
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results",
        help="directory for handover-<stamp>.{json,md} and handover-latest.* (default bench/results)",
    )
    ap.add_argument("--prefix", default="handover", help="lab prefix (default handover)")
    ap.add_argument("--moves", type=int, default=MOVES, help=f"moves per kind (default {MOVES})")
    ap.add_argument(
        "--nebula-moves", type=int, help="Nebula moves (default 2, 1 with --quick; about a minute each; 0: none)"
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from . import handover_report, report  # report imports handover_report, which imports this

    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench.handover: needs root (network namespaces)", file=sys.stderr)
        return 2
    started = datetime.now(UTC)
    env = report.environment()
    env["nebula"] = nebula.version()
    mode = {"quick": args.quick, "moves": args.moves, "nebula_moves": args.nebula_moves}
    result: dict = {
        "started_utc": started.strftime("%Y-%m-%d %H:%M:%SZ"),
        "complete": False,
        "environment": env,
        "config": {"quick": args.quick, "prefix": args.prefix, "moves": args.moves},
        "loadavg_before": report.loadavg(),
    }
    signal.signal(signal.SIGTERM, _sigterm)
    t0 = time.monotonic()
    lab = Lab(args.prefix)
    rc = 0
    try:
        if netns.list_namespaces(args.prefix):
            log(f"removing a stale lab with prefix {args.prefix!r}")
            down(args.prefix)
        log(f"lab up (prefix {args.prefix})")
        lab.up(timeout=30)
        stage(lab, mode, result)
        result["complete"] = True
    except BaseException as e:  # noqa: BLE001 - keep what was measured, whatever stopped us
        result["error"] = f"{type(e).__name__}: {e}"
        result["traceback"] = traceback.format_exc()
        log(f"aborted: {result['error']}")
        rc = 1
    finally:
        log("lab down")
        result["teardown_removed"] = down(args.prefix)
    result["duration_s"] = time.monotonic() - t0
    result["loadavg_after"] = report.loadavg()
    handover_report.summarize(result)
    written = handover_report.write(result, args.out, started.strftime("%Y%m%dT%H%M%SZ"), result["complete"])
    print(handover_report.standalone_markdown(result))
    log("wrote " + ", ".join(str(p) for p in written))
    return rc


if __name__ == "__main__":
    sys.exit(main())
