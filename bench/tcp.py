"""The TCP stage: one iperf3 TCP run per path, measured again if the machine was busy.

Each run meters the tunnel processes' CPU and the load from outside the lab
(`probes.tcp_trial`, `cpu.CpuMeter`). A tunnel TCP run is CPU-bound, so a
run during which processes outside the lab (another session's tests, other
labs) used more than the limit (% of a core) is measured again, after
waiting up to OUTSIDE_IDLE_WAIT s for an idle machine, at most
OUTSIDE_RETRIES times; the discarded figures stay in "discarded_busy".
"""

from __future__ import annotations

from cyphonic.lab import Lab

from . import cpu, probes
from .datapaths import PORT, DataPath
from .progress import log
from .stats import dig

OUTSIDE_LIMIT_PCT = 20.0
OUTSIDE_RETRIES = 2
OUTSIDE_IDLE_WAIT = 60.0


class TcpRun:
    """`run(path, seconds)`: one TCP run, redone while outside load exceeds `outside_limit`."""

    def __init__(self, lab: Lab, outside_limit: float, links: list[tuple[str, str]]) -> None:
        self.lab = lab
        self.outside_limit = outside_limit  # % of a core; 0: never redo
        self.links = links  # (host, device) byte counters for paths that name none

    def __call__(self, p: DataPath, seconds: float) -> dict:
        discarded = []
        while True:
            r = probes.tcp_trial(
                self.lab,
                p.client,
                p.target,
                PORT,
                seconds,
                list(p.hosts),
                counters=p.counters,
                extra=p.iperf_extra,
                pids_of=p.pids_of,
                links=self.links if p.links is None else p.links,
            )
            outside = dig(r, "cpu", "outside_cpu_pct")
            limit = self.outside_limit
            if not limit or outside is None or outside <= limit or len(discarded) >= OUTSIDE_RETRIES:
                break
            top = ", ".join(f"{t['comm']} {t['cpu_s']}" for t in r["cpu"]["outside_top"][:3])
            log(
                f"  {p.key} TCP: processes outside the lab took {outside:.0f}% of a core "
                f"({top}); waiting for idle and measuring again"
            )
            discarded.append(
                {k: r.get(k) for k in ("gbps", "retransmits", "error")}
                | {"outside_cpu_pct": outside, "outside_top": r["cpu"]["outside_top"]}
            )
            cpu.wait_idle(OUTSIDE_IDLE_WAIT)
        if discarded:
            r["discarded_busy"] = discarded
        return r


def stage(run: TcpRun, paths: dict[str, DataPath], seconds: float, out: dict) -> None:
    """TCP A B C: out[path] = one run each."""
    for p in paths.values():
        out[p.key] = run(p, seconds)
