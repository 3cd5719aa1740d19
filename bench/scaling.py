"""Scaling curves: how signaling cost grows with work.

Three rounds, 1, 10 and 100 peers, each a fresh `bench.swarm` process in
mn's namespace with fresh identities (s001, s002-s011, s012-s111, ...), so
every route selection is a first one: each peer logs in, registers, and
then all of them at the same moment select a route to cn.cyphonic.test and
establish a tunnel with it. Per count: the daemons' own route selection and
tunnel establishment timers (those `cyphonic status` reports as `timers`,
comparable with the bench's restart timers), login + registration times,
failures, wall time of the round.

mn's namespace: a global address, so the NMS can name a path to the swarm
from cn behind its NAPT (the lab picks `reverse`: cn opens the tunnels),
and the same place the bench's restart timers are taken from.

The last round's swarm then holds its 100 tunnels up (keepalives flowing)
while cn's daemon is metered: RSS before the round and with the tunnels up,
and its CPU (utime + stime) over the hold window, as a share of one core.
That is what a node with 100 idle tunnels costs.
"""

from __future__ import annotations

import json
import os
import select
import shlex
import subprocess
import sys
import time
from pathlib import Path

from cyphonic import config
from cyphonic.lab import Lab, LabError
from cyphonic.node.settings import SCHEMA as NODE_SCHEMA

from . import cpu
from .progress import log
from .stats import percentile, short

COUNTS = (1, 10, 100)
SWARM_HOST = "mn"
TARGET_HOST = "cn"
PORT_BASE = 21000  # identity number k listens on PORT_BASE + k (its resolver 20000 above)
# the hold window: full, several keepalive intervals (10 s by default) so
# every tunnel sends its keepalives inside it; quick is a smoke run and
# takes half an interval (its CPU figure is indicative only)
WINDOW = {True: 5.0, False: 30.0}
HOLD_MARGIN = 4.0  # the swarm holds this much longer than the window: cn is read after it
REPO = Path(__file__).resolve().parents[1]


def swarm_command(lab: Lab, count: int, first: int, hold: float) -> list[str]:
    """The swarm's argv (run inside SWARM_HOST's namespace) for identities first .. first+count-1."""
    return [
        sys.executable,
        "-m",
        "bench.swarm",
        "--ca",
        str(lab.paths.ca),
        "--out",
        str(lab.paths.root / "swarm"),
        *[arg for a in lab.topology.cloud_addresses_for(SWARM_HOST) for arg in ("--cloud", a)],
        "--count",
        str(count),
        "--first",
        str(first),
        "--port-base",
        str(PORT_BASE + first - 1),
        "--target",
        f"{TARGET_HOST}.{lab.topology.domain}",
        "--hold",
        f"{hold:g}",
    ]


def rss_kib(pid: int) -> int:
    """VmRSS of a process, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_swarm(lab: Lab, cmd: list[str], count: int) -> tuple[subprocess.Popen, Path]:
    """The swarm in SWARM_HOST's namespace, from this checkout (its stderr to a log file)."""
    env = dict(os.environ)
    # `python -m bench.swarm` must find this bench (and the cyphonic the bench imports)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    errlog = lab.paths.root / f"swarm-{count}.log"
    with open(errlog, "ab") as err:
        proc = lab.popen(SWARM_HOST, cmd, stdout=subprocess.PIPE, stderr=err, cwd=REPO, env=env, text=True)
    return proc, errlog


def read_report(proc: subprocess.Popen, timeout: float) -> dict | None:
    """The swarm's JSON line, or None if it exits or says nothing in time."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        return None
    line = proc.stdout.readline()
    try:
        return json.loads(line)
    except ValueError:
        return None


def stop(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """Wait for the swarm to exit; terminate it (our own child, by its pid) after `timeout`."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(5)


def concurrency_entry(count: int, report: dict | None, wall: float, errlog: Path) -> dict:
    """One `concurrency` row from the swarm's report (or its failure)."""
    if report is None:
        tail = errlog.read_text(errors="replace").strip().splitlines()[-3:] if errlog.exists() else []
        return {
            "peers": count,
            "route_selection_ms": [],
            "tunnel_establishment_ms": [],
            "login_ms": [],
            "failed": count,
            "errors": [f"swarm gave no report: {' | '.join(tail)}"[:300]],
            "wall_s": round(wall, 3),
        }
    ok = [i for i in report["identities"] if i["error"] is None and i["route_selection_ms"] is not None]
    return {
        "peers": count,
        "route_selection_ms": [float(i["route_selection_ms"]) for i in ok],
        "tunnel_establishment_ms": [float(i["tunnel_establishment_ms"] or 0.0) for i in ok],
        "login_ms": [round(float(i["login_ms"]), 3) for i in report["identities"] if i["login_ms"] is not None],
        "failed": int(report["failed"]),
        "errors": list(report["errors"])[:5],
        "wall_s": float(report["wall_s"]),
    }


def p50_p99(values: list[float]) -> str:
    return f"p50 {short(percentile(values, 50))} p99 {short(percentile(values, 99))} ms"


def drops(lab: Lab, host: str) -> dict[str, int]:
    return dict((lab.status(host) or {}).get("drops") or {})


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def drops_during(lab: Lab, before: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """What the cloud and cn dropped since `before` (e.g. the AS's login budget)."""
    return {host: delta(counts, drops(lab, host)) for host, counts in before.items()}


def meter_target(lab: Lab, pid: int, names: set[str], window: float) -> tuple[dict, dict]:
    """cn's daemon over `window` s while the swarm holds its tunnels up:
    CPU (utime + stime) as % of a core, RSS at the end, the swarm's tunnels it lists."""
    c0, w0 = cpu.cpu_seconds(pid), time.monotonic()
    time.sleep(window)
    c1, w1 = cpu.cpu_seconds(pid), time.monotonic()
    rss = rss_kib(pid)
    status = lab.status(TARGET_HOST) or {}
    up = sum(1 for p in status.get("peers", []) if p.get("fqdn") in names)
    metered = {
        "target": TARGET_HOST,
        "count": up,
        "rss_kib_before": 0,
        "rss_kib_after": rss,
        "cpu_pct_of_core": round(100 * (c1 - c0) / (w1 - w0), 3),
        "window_s": round(w1 - w0, 3),
        "keepalive_s": 0.0,
        "pid": pid,
    }
    return metered, status


def stage(lab: Lab, mode: dict, result: dict) -> None:
    """Fill result["scaling"]: per count the timers of N concurrent first
    route selections to cn, then cn's RSS and CPU with 100 tunnels up."""
    t_stage = time.monotonic()
    window = WINDOW[bool(mode.get("quick"))]
    keepalive = float(config.load(lab.config(TARGET_HOST), NODE_SCHEMA)["keepalive"])
    swarm_dir = lab.paths.root / "swarm"
    # fresh names in this lab even when the stage runs again in it
    first = 1 + (sum(1 for _ in swarm_dir.iterdir()) if swarm_dir.exists() else 0)
    target_fqdn = f"{TARGET_HOST}.{lab.topology.domain}"
    out: dict = {
        "config": {"counts": list(COUNTS), "host": SWARM_HOST, "target": target_fqdn, "hold_s": window, "command": ""},
        "concurrency": [],
        "tunnels": {},
    }
    result["scaling"] = out
    pid = rss_before = 0
    for count in COUNTS:
        last = count == COUNTS[-1]
        # the last round holds its tunnels past the window: cn is read after it
        cmd = swarm_command(lab, count, first, window + HOLD_MARGIN if last else 0)
        names = {f"s{first + i:03d}.{lab.topology.domain}" for i in range(count)}
        first += count
        if last:
            out["config"]["command"] = shlex.join(lab.argv(SWARM_HOST, cmd))
            pids = cpu.daemon_pids(lab.ns(TARGET_HOST))
            if not pids:
                raise LabError(f"scaling: no node daemon in {TARGET_HOST}'s namespace to meter")
            pid = pids[0]
            rss_before = rss_kib(pid)
        before = {"cloud": drops(lab, "cloud"), TARGET_HOST: drops(lab, TARGET_HOST)}
        log(f"scaling: {count} peer(s) in {SWARM_HOST} -> {target_fqdn}")
        t0 = time.monotonic()
        proc, errlog = start_swarm(lab, cmd, count)
        report = read_report(proc, timeout=45)  # the swarm's own timeouts: login 20 s + route 15 s
        row = concurrency_entry(count, report, time.monotonic() - t0, errlog)
        out["concurrency"].append(row)
        log(
            f"scaling: {count} peer(s): route {p50_p99(row['route_selection_ms'])}, "
            f"tunnel {p50_p99(row['tunnel_establishment_ms'])}, login {p50_p99(row['login_ms'])}, "
            f"wall {row['wall_s']} s (swarm CPU {(report or {}).get('round_cpu_s')} s), "
            f"failed {row['failed']} {row['errors'] or ''}"
        )
        if not last or report is None:
            stop(proc, 15)
            log(f"scaling: drops during the round: {drops_during(lab, before)}")
            continue
        metered, status = meter_target(lab, pid, names, window)
        stop(proc, 0)  # metered: the rest of its hold is not needed
        metered.update(rss_kib_before=rss_before, keepalive_s=keepalive)
        out["tunnels"] = metered
        log(
            f"scaling: {TARGET_HOST} with {metered['count']} swarm tunnels up "
            f"({len(status.get('peers', []))} in all): RSS {rss_before} -> {metered['rss_kib_after']} KiB, "
            f"CPU {metered['cpu_pct_of_core']}% of a core over {metered['window_s']} s (keepalive {keepalive:g} s); "
            f"drops during the round: {drops_during(lab, before)}"
        )
    log(f"scaling: stage took {time.monotonic() - t_stage:.1f} s")
