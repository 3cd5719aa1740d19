"""What a move costs a running application: a stock `ping` every 10 ms
across the move, and the gap it saw.

`Pinger` runs `ping -D -i 0.01` (the kernel's timestamps on every reply) in
a host's namespace; `gaps` cuts its replies at the times the moves started
and says, for each, how long no reply came and how many pings were lost.
Used by the mobility system tests, `bench/handover.py` and the demo.
"""

from __future__ import annotations

import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .instance import Lab

INTERVAL = 0.01
_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)", re.M)
_SENT = re.compile(r"(\d+) packets transmitted")


@dataclass(frozen=True)
class Gap:
    """One move as the pinger saw it."""

    start: float  # when the move began (wall clock)
    gap_ms: float | None  # the longest silence between replies after it (None: no reply after)
    lost: int  # pings sent after it and never answered
    first_reply: float | None  # the first reply after the move

    def line(self) -> str:
        if self.gap_ms is None:
            return "no reply after the move"
        return f"longest gap {self.gap_ms:.0f} ms, {self.lost} pings of 10 ms lost"


class Pinger:
    """`ping -D -i 0.01 target` from `host`, until `stop`."""

    def __init__(self, lab: Lab, host: str, target: str, interval: float = INTERVAL) -> None:
        self.started = time.time()
        # a file, not a pipe nobody reads until `stop`: 100 lines a second
        # fill a pipe's 64 KB in ~9 s, and ping then blocks on its output
        # and sends no more (a tour under load that took longer hit it)
        self._out = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in stop()
        self._proc = lab.popen(
            host,
            ["ping", "-D", "-n", "-i", str(interval), "-W", "1", target],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.replies: list[tuple[float, int]] = []
        self.transmitted = 0
        self.output = ""

    def stop(self) -> list[tuple[float, int]]:
        """Stop (SIGINT: ping flushes its output) and return (time, seq) of every reply."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._out.seek(0)
        self.output = self._out.read()
        self._out.close()
        self.replies = [(float(t), int(seq)) for t, seq in _REPLY.findall(self.output)]
        sent = _SENT.search(self.output)
        self.transmitted = int(sent[1]) if sent else 0
        return self.replies

    def gaps(self, starts: list[float], end: float | None = None) -> list[Gap]:
        """For each move start: the longest silence from the last reply
        before it until the next move (or `end`, or the last reply), and the
        pings lost in that time."""
        out = []
        final = end if end is not None else (self.replies[-1][0] if self.replies else time.time())
        for k, start in enumerate(starts):
            until = starts[k + 1] if k + 1 < len(starts) else final
            before = [r for r in self.replies if r[0] < start]
            during = [r for r in self.replies if start <= r[0] < until]
            if not during:
                out.append(Gap(start, None, 0, None))
                continue
            edge = [before[-1]] if before else [(self.started, during[0][1] - 1)]
            seen = edge + during
            gap = max(b[0] - a[0] for a, b in zip(seen, seen[1:], strict=False))
            answered = {seq for _, seq in during}
            lost = sum(1 for seq in range(edge[0][1] + 1, during[-1][1]) if seq not in answered)
            out.append(Gap(start, gap * 1000, lost, during[0][0]))
        return out

    def longest_gap_ms(self, since: float, until: float) -> float:
        """The longest silence between replies in [since, until]."""
        times = [since] + [t for t, _ in self.replies if since <= t <= until] + [until]
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0) * 1000
