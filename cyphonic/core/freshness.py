"""Freshness of requests that make their receiver create state: a timestamp
within MAX_SKEW of the receiver's clock, and an id never seen before.

An id is remembered until its timestamp falls out of the window, after
which the timestamp alone refuses it; so memory is bounded by how many
authenticated requests arrive in 2 * MAX_SKEW, and a capacity caps even that
(the oldest are forgotten first: they are the closest to expiring anyway).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

# The same bound the AS applies to a Login Request's timestamp: two hosts
# whose clocks differ by more cannot talk; NTP keeps real ones far closer.
MAX_SKEW = 300.0


class Freshness:
    def __init__(self, max_skew: float = MAX_SKEW, capacity: int = 65536) -> None:
        self.max_skew = max_skew
        self.capacity = capacity
        self._seen: OrderedDict[Hashable, float] = OrderedDict()  # id -> forget after

    def refuse(self, key: Hashable, timestamp: float, now: float) -> str | None:
        """Why `key` stamped `timestamp` is not fresh at `now`, or None (then
        it is remembered, so the same key is refused from now on)."""
        if abs(now - timestamp) > self.max_skew:
            return "stale" if timestamp < now else "from the future"
        self._prune(now)
        if key in self._seen:
            return "replayed"
        self._seen[key] = timestamp + self.max_skew
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return None

    def seen(self, key: Hashable) -> bool:
        return key in self._seen

    def _prune(self, now: float) -> None:
        # insertion order is nearly time order; stop at the first live one
        seen = self._seen
        while seen:
            key, until = next(iter(seen.items()))
            if until >= now:
                break
            del seen[key]

    def __len__(self) -> int:
        return len(self._seen)
