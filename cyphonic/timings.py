"""Timers the daemons report: the last samples for `cyphonic status`, and
cumulative bucket counts for a histogram that never goes back (a scraper
sees every sample, even those the bounded window has let go)."""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterator

# upper bounds in milliseconds: a route selection over loopback takes
# ~1 ms, across the internet tens, through a TRS or after retransmission
# seconds
BOUNDS_MS = (0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0)


class Timings:
    """A bounded window of samples (milliseconds), iterable like the deque
    it replaces, plus how many samples fell at or under each bound ever."""

    def __init__(self, maxlen: int = 1000) -> None:
        self.recent: deque[float] = deque(maxlen=maxlen)
        self.buckets = [0] * (len(BOUNDS_MS) + 1)  # the last one: over every bound (+Inf)
        self.count = 0
        self.sum_ms = 0.0

    def append(self, ms: float) -> None:
        self.recent.append(ms)
        self.buckets[bisect.bisect_left(BOUNDS_MS, ms)] += 1
        self.count += 1
        self.sum_ms += ms

    def __iter__(self) -> Iterator[float]:
        return iter(self.recent)

    def __len__(self) -> int:
        return len(self.recent)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound in ms, samples at or under it), +Inf last."""
        out, total = [], 0
        for bound, n in zip((*BOUNDS_MS, float("inf")), self.buckets, strict=True):
            total += n
            out.append((bound, total))
        return out
