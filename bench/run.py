"""The whole evaluation in the network-namespace lab, in one command.

    sudo .venv/bin/python -m bench.run [--quick] [--out bench/results] [--prefix bench]

Brings a lab up under its own prefix and, in the same namespaces and in
interleaved repetitions, measures plain routing, Nebula, wireguard-go,
OpenVPN and CYPHONIC mn -> cn (TCP, TCP at 1% loss, UDP, idle RTT, CPU per
Gbit); across two NAPTs, Nebula and CYPHONIC hole punched and relayed; then
the signaling timers, the seed paper's adapter evaluation, the scaling
curves and the handover. Tears the lab down (always) and writes
bench/results/<UTC stamp>/ (results.json, report.md, chart-*.png); a
complete run also moves bench/results/latest to it. --quick runs every
stage once with short runs (a smoke run, ~2.5 minutes); the full run
(~14 minutes) gives the figures to quote. What each figure means:
bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import (
    adapter,
    adapter_report,
    cpu,
    handover,
    handover_report,
    headline,
    loss,
    nebula,
    openvpn,
    report,
    rtt,
    scaling,
    seed,
    summary,
    wireguard,
)
from bench.measure import measure
from bench.notes import notes
from bench.progress import Stages, log
from bench.tcp import OUTSIDE_LIMIT_PCT
from cyphonic.lab import Lab, down, netns

MODES = {
    # reps: interleaved repetitions; refine: bisection steps of the UDP search;
    # udp_start: first offered rate of the search (Mbit/s; 0: each path's own);
    # moves / nebula_moves: handover moves per kind (the scaling window: scaling.WINDOW).
    # quick is a smoke run (~2.5 minutes, every stage once, n = 1): the figures
    # to quote come from a full run (~14 minutes).
    "quick": dict(reps=1, tcp_seconds=1, udp_seconds=1, refine=0, udp_start=800, restarts=3, moves=1, nebula_moves=0),
    "full": dict(reps=3, tcp_seconds=4, udp_seconds=2, refine=2, udp_start=0, restarts=10, moves=3, nebula_moves=1),
}


def _sigterm(signum, frame):  # noqa: ARG001
    raise SystemExit(128 + signum)  # unwinds through the finally that tears the lab down


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="every stage once, short runs (~2.5 minutes): a smoke run")
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results",
        help="where the run's directory <UTC stamp>/ goes (default bench/results)",
    )
    ap.add_argument("--prefix", default="bench", help="lab prefix (default bench)")
    ap.add_argument("--reps", type=int, help="override the number of interleaved repetitions")
    ap.add_argument("--restarts", type=int, help="override the number of daemon restarts (0: skip the timers part)")
    ap.add_argument("--no-restarts", action="store_true", help="same as --restarts 0")
    ap.add_argument(
        "--no-relay", action="store_true", help="skip the relayed (TRS) vs direct (hole punched) measurements"
    )
    ap.add_argument(
        "--adapter",
        type=int,
        choices=(0, 1),
        default=1,
        help="1 (default): after the other stages, the adapter stage (general node gn1 vs node mn); 0: skip it",
    )
    ap.add_argument(
        "--handover",
        type=int,
        choices=(0, 1),
        default=1,
        help="1 (default): last, the handover stage (mn moves while it pings cn; Nebula beside it); 0: skip it",
    )
    ap.add_argument("--moves", type=int, help="handover stage: moves per kind of move (default 3, quick 1)")
    ap.add_argument(
        "--scaling",
        type=int,
        choices=(0, 1),
        default=1,
        help="1 (default): the scaling stage (1, 10, 100 concurrent peers; a node with 100 tunnels); 0: skip it",
    )
    ap.add_argument(
        "--only",
        choices=("adapter", "handover", "scaling"),
        help="run only this stage (for testing it; latest is not moved)",
    )
    ap.add_argument(
        "--family",
        type=int,
        choices=(4, 6),
        default=4,
        help="address family CYPHONIC's iperf3/ping use for cn.cyphonic.test (default 4, like Nebula's overlay)",
    )
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="first, and before every repetition, wait up to SECONDS for the "
        "machine to be idle (< 15%% CPU busy over 3 s); default: do not wait",
    )
    ap.add_argument(
        "--outside-limit",
        type=float,
        default=OUTSIDE_LIMIT_PCT,
        metavar="PCT",
        help="measure a TCP run again if processes outside the lab used more "
        f"than PCT %% of a core during it (default {OUTSIDE_LIMIT_PCT:g}; "
        "0: never)",
    )
    return ap.parse_args(argv)


def mode_of(args: argparse.Namespace) -> dict:
    """Durations and counts of this run: --quick or full, and the overrides."""
    mode = dict(MODES["quick" if args.quick else "full"])
    if args.reps is not None:
        mode["reps"] = max(1, args.reps)
    if args.restarts is not None:
        mode["restarts"] = max(0, args.restarts)
    if args.no_restarts:
        mode["restarts"] = 0
    mode["outside_limit"] = max(0.0, args.outside_limit)
    mode["wait_idle"] = args.wait_idle
    mode["relay"] = not args.no_relay
    mode["adapter"] = (bool(args.adapter) and not args.only) or args.only == "adapter"
    mode["handover"] = (bool(args.handover) and not args.only) or args.only == "handover"
    mode["scaling"] = (bool(args.scaling) and not args.only) or args.only == "scaling"
    if args.moves is not None:
        mode["moves"] = max(1, args.moves)
    mode["quick"] = args.quick
    mode["only"] = args.only
    return mode


def environment(prefix: str) -> dict:
    """report.environment(), with the other labs, Nebula's version and the loss hook."""
    env = report.environment()
    env["other_namespaces"] = [n for n in _namespaces() if not n.startswith(prefix + "-")]
    env["nebula"] = nebula.version()
    env["wireguard_go"] = wireguard.version()
    env["openvpn"] = openvpn.version()
    env["command"] = " ".join([Path(sys.executable).name, "-m", "bench.run", *sys.argv[1:]])
    env["loss_hook_files"] = loss.hook_in_source()
    # Only the lossy cn daemon may see the loss variable; the lab passes ours on.
    env["inherited_loss_env"] = os.environ.pop(loss.ENV, None)
    return env


def config(args: argparse.Namespace, mode: dict) -> dict:
    """The JSON's config before measuring (measure adds MTUs and paths)."""
    return {
        "quick": args.quick,
        "prefix": args.prefix,
        "repetitions": mode["reps"],
        "tcp_seconds": mode["tcp_seconds"],
        "udp_seconds": mode["udp_seconds"],
        "udp_refine_steps": mode["refine"],
        "udp_loss_limit_pct": 1.0,
        "loss_fraction": loss.FRACTION,
        "ping_count": rtt.PING_COUNT,
        "ping_interval": rtt.PING_INTERVAL,
        "restarts": mode["restarts"],
        "relay": mode["relay"],
        "adapter": mode["adapter"],
        "handover": mode["handover"],
        "handover_moves": mode["moves"],
        "only": mode["only"],
        "relay_goals": {k: f"relayed/direct {op} {b}" for k, (op, b) in summary.RELAY_GOALS.items()},
        "outside_limit_pct": mode["outside_limit"],
        "wait_idle_s": mode["wait_idle"],
        "goals": {k: f"C/B {op} {b}" for k, (op, b) in summary.GOALS.items()},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench: needs root (network namespaces)", file=sys.stderr)
        return 2
    missing = [
        pkg for pkg, mod in (("nebula", nebula), ("wireguard-go", wireguard), ("openvpn", openvpn)) if not mod.version()
    ]
    if missing:
        print(
            f"bench: needs {', '.join(missing)} (apt-get install nebula wireguard-go wireguard-tools openvpn)",
            file=sys.stderr,
        )
        return 2

    mode = mode_of(args)
    idle = cpu.wait_idle(args.wait_idle) if args.wait_idle > 0 else None
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    env = environment(args.prefix)
    result: dict = {
        "started_utc": started.strftime("%Y-%m-%d %H:%M:%SZ"),
        "complete": False,
        "environment": env,
        "config": config(args, mode),
        "loadavg_before": report.loadavg(),
        "idle_wait": idle,
        "samples": {"repetitions": [], "restarts": []},
    }
    signal.signal(signal.SIGTERM, _sigterm)
    t0 = time.monotonic()
    rc = run_lab(args.prefix, mode, result, args.family)
    result["duration_s"] = time.monotonic() - t0
    result["loadavg_after"] = report.loadavg()
    env["other_namespaces_end"] = [n for n in _namespaces() if not n.startswith(args.prefix + "-")]
    result["series"] = summary.series(result)
    result["summary"] = summary.summary(result["series"])
    result["goals"] = summary.goals(result["summary"])
    adapter_report.summarize(result)
    handover_report.summarize(result)
    result["notes"] = notes(result)
    result["seed_tables"] = seed_figures(result)
    result["headline"] = headline.rows(result)
    run_dir = args.out / stamp
    written = report.write(result, run_dir)
    written += draw_charts(result, run_dir, "chart")
    if result["complete"] and not args.only:
        report.point_latest(args.out, stamp)
    print(report.markdown(result))
    log("wrote " + ", ".join(str(p) for p in written))
    return rc


def draw_charts(result: dict, out: Path, stem: str) -> list[Path]:
    """The run's PNG charts (bench/charts.py), when matplotlib is installed."""
    try:
        from bench import charts
    except ImportError as exc:
        log(f"no charts: {exc} (install the bench extra: matplotlib)")
        return []
    try:
        return charts.render(result, out, stem)
    except Exception as exc:  # noqa: BLE001 - a chart must not lose the run's numbers
        log(f"charts: {type(exc).__name__}: {exc}")
        return []


def seed_figures(result: dict) -> dict | None:
    """The seed paper's tables with this run's figures beside them (bench/seed.py)."""
    try:
        return seed.figures(result)
    except Exception as exc:  # noqa: BLE001 - keep the run's numbers whatever the table code does
        log(f"seed tables: {type(exc).__name__}: {exc}")
        return None


def run_lab(prefix: str, mode: dict, result: dict, family: int) -> int:
    """Lab up, measure, lab down (always); 1 if something stopped the measuring."""
    lab = Lab(prefix)
    stages = Stages(_count_stages(mode))
    result["stage_times"] = stages.times
    rc = 0
    try:
        if netns.list_namespaces(prefix):
            log(f"removing a stale lab with prefix {prefix!r}")
            down(prefix)
        stages.next(f"lab up (prefix {prefix})")
        lab.up(timeout=30)
        if not mode.get("only"):
            measure(lab, mode, result, family, stages)
        if mode.get("adapter"):
            stages.next("adapter: general node gn1 (behind the adapter) vs node mn")
            adapter.stage(lab, mode, result)
        if mode.get("scaling"):
            stages.next("scaling: 1, 10, 100 concurrent peers; cn with 100 tunnels")
            scaling.stage(lab, mode, result)
        if mode.get("handover"):
            stages.next("handover: mn moves while it pings cn")
            handover.stage(lab, mode, result)
        result["complete"] = True
    except BaseException as e:  # noqa: BLE001 - keep what was measured, whatever stopped us
        result["error"] = f"{type(e).__name__}: {e}"
        detail = getattr(e, "detail", None)
        if detail:
            result["error_detail"] = detail
        result["traceback"] = traceback.format_exc()
        log(f"aborted: {result['error']}")
        rc = 1
    finally:
        stages.next("lab down")
        removed = down(prefix)
        stages.close()
        result["teardown_removed"] = removed
    return rc


def _count_stages(mode: dict) -> int:
    """How many progress stages this run has (lab up and down, measure's own, the optional ones)."""
    n = 2
    if not mode.get("only"):
        n += 2 + mode["reps"] + (1 if mode["restarts"] else 0)
    return n + sum(1 for k in ("adapter", "scaling", "handover") if mode.get(k))


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


if __name__ == "__main__":
    sys.exit(main())
