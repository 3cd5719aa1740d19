"""Idle RTT with the node's data path on its own thread vs on Trio tasks.

    .venv/bin/python -m bench.data_thread [--reps N] [--count N] [--out DIR] [--prefix P]

One lab; mn and cn's node.toml get `data_thread = true` or `false` in turn
(A B B A A B ...: the order alternates so drift hits both alike), both
daemons restarted each time, then `ping -4 -n -c COUNT -i 0.05` from mn to
cn.cyphonic.test. Per setting: the ping avg of each repetition and their
median. The status is read back so a setting that did not take is seen.
Writes data-thread-<stamp>.{json,md} and data-thread-latest.*.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from cyphonic.lab import Lab, LabError, down, netns

from . import report
from .progress import log

CN = "cn.cyphonic.test"
_AVG = re.compile(r"= [\d.]+/([\d.]+)/")


def configure(lab: Lab, on: bool) -> None:
    """Both nodes' data_thread key, then a restart of both and a first ping."""
    for host in ("mn", "cn"):
        path = lab.config(host)
        text = re.sub(r"^data_thread = .*\n", "", path.read_text(), flags=re.M)
        # a top-level key: before the first [table]
        head, sep, tail = text.partition("\n[")
        path.write_text(f"{head}\ndata_thread = {'true' if on else 'false'}\n{sep}{tail}")
        lab.kill(host)
        lab.start(host)
    deadline = time.monotonic() + 30
    while lab.run("mn", ["ping", "-4", "-c", "1", "-W", "1", CN]).returncode != 0:
        if time.monotonic() > deadline:
            raise LabError("mn cannot ping cn after the restart")
        time.sleep(0.3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.data_thread", description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=4, help="repetitions per setting (default 4)")
    ap.add_argument("--count", type=int, default=100, help="pings per repetition (default 100)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--prefix", default="dth")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.data_thread: needs root (network namespaces)", file=sys.stderr)
        return 2
    started = datetime.now(UTC)
    runs: dict[str, list[float]] = {"thread": [], "trio": []}
    lab = Lab(args.prefix)
    try:
        if netns.list_namespaces(args.prefix):
            down(args.prefix)
        log(f"lab up (prefix {args.prefix})")
        lab.up(timeout=30)
        for rep in range(args.reps):
            for on in (True, False) if rep % 2 == 0 else (False, True):
                configure(lab, on)
                status = lab.status("mn") or {}
                if status.get("dataplane", {}).get("data_thread") != on:
                    raise LabError(f"mn's data_thread is not {on}: {status.get('dataplane')}")
                argv_ping = ["ping", "-4", "-n", "-q", "-c", str(args.count), "-i", "0.05", CN]
                done = lab.run("mn", argv_ping, timeout=args.count * 0.05 + 30)
                m = _AVG.search(done.stdout)
                if not m:
                    raise LabError("ping gave no RTT", done.stdout + done.stderr)
                name = "thread" if on else "trio"
                runs[name].append(float(m[1]))
                log(f"repetition {rep + 1}/{args.reps}: {name} avg {m[1]} ms")
    finally:
        log("lab down")
        down(args.prefix)
    result = {
        "started_utc": started.strftime("%Y-%m-%d %H:%M:%SZ"),
        "environment": report.environment(),
        "config": vars(args) | {"out": str(args.out)},
        "avg_rtt_ms": runs,
        "median_ms": {k: statistics.median(v) for k, v in runs.items()},
    }
    env = result["environment"]
    med = result["median_ms"]
    text = "\n".join(
        [
            "# Idle RTT: the data path on its own thread vs on Trio tasks",
            "",
            f"{result['started_utc']}, commit {(env.get('git_commit') or '')[:7]}, {env.get('cpu_model')}; "
            f"mn -> cn.cyphonic.test, `ping -c {args.count} -i 0.05`, both daemons restarted with the setting, "
            "settings alternating.",
            "",
            "| data path | ping avg per repetition, ms | median, ms |",
            "|---|---|---:|",
            *(f"| {k} | {', '.join(f'{x:.3f}' for x in v)} | {med[k]:.3f} |" for k, v in runs.items()),
            "",
            f"thread / trio: {med['thread'] / med['trio']:.2f}",
            "",
        ]
    )
    report.write_stage(args.out, "data-thread", started, result, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
