"""One-shot timers for a sans-I/O machine: a callback at a time, run by
`handle_timer(now)`; nothing here reads the clock."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable


class Timers:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[float], None]]] = []
        self._order = itertools.count()  # equal times run in the order they were set

    def at(self, when: float, callback: Callable[[float], None]) -> None:
        heapq.heappush(self._heap, (when, next(self._order), callback))

    def next_timer(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def run_due(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            _, _, callback = heapq.heappop(self._heap)
            callback(now)
