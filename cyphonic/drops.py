"""Counted drops with rate-limited log lines.

Every listener treats every datagram as hostile: a bad one is counted under
its reason and logged at most once per interval per reason, so a flood
cannot turn into a log flood.
"""

from __future__ import annotations

import logging
import time
from collections import Counter


class Drops:
    def __init__(self, logger: logging.Logger, interval: float = 5.0) -> None:
        self.counts: Counter[str] = Counter()
        self._log = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def __call__(
        self, reason: str, source: object = None, detail: str = "", *, per_detail: bool = False, count: int = 1
    ) -> None:
        """Count a drop (`count` of them: a compiled loop reports a batch's);
        log it unless this reason (or, with `per_detail`, this reason and
        detail, for a small fixed set of details) was logged within the
        interval."""
        self.counts[reason] += count
        now = time.monotonic()
        key = f"{reason}\0{detail}" if per_detail else reason
        if now - self._last.get(key, -1e9) < self._interval:
            self._suppressed[key] += 1
            return
        self._last[key] = now
        more = self._suppressed.pop(key, 0)
        tail = f" (+{more} more since last report)" if more else ""
        where = f" from {source}" if source is not None else ""
        self._log.warning("dropped %s%s%s%s", reason, where, f": {detail}" if detail else "", tail)

    def total(self) -> int:
        return sum(self.counts.values())
