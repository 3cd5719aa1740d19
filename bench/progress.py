"""Progress lines on stderr while a run goes; the results go to files."""

from __future__ import annotations

import sys
import time


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Stages:
    """One line per stage: `stage 3/9 (+41 s): ...`, and each stage's seconds kept for the JSON."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.t0 = time.monotonic()
        self.times: list[dict] = []  # [{"stage", "started_s", "seconds"}], the last one open

    def next(self, name: str) -> None:
        now = time.monotonic() - self.t0
        if self.times:
            self.times[-1]["seconds"] = round(now - self.times[-1]["started_s"], 1)
        self.done += 1
        self.times.append({"stage": name, "started_s": round(now, 1), "seconds": None})
        log(f"stage {self.done}/{max(self.total, self.done)} (+{now:.0f} s): {name}")

    def close(self) -> None:
        if self.times and self.times[-1]["seconds"] is None:
            self.times[-1]["seconds"] = round(time.monotonic() - self.t0 - self.times[-1]["started_s"], 1)
