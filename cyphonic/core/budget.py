"""Token buckets: how much work a source may cause per second.

Used where a datagram costs the receiver real work before anything about it
is authenticated (the AS's Ed25519 checks), or where an authenticated
sender could make the receiver create state faster than it should (route
selections per node at the NMS).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class Bucket:
    __slots__ = ("rate", "burst", "tokens", "at")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, now

    def take(self, now: float, cost: float = 1.0) -> bool:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True


class Budgets:
    """One bucket per key, at most `keys` of them (the least recently used
    is forgotten: a forgotten key starts again with a full bucket, which is
    no more than a new source would get)."""

    def __init__(self, rate: float, burst: float, keys: int = 4096) -> None:
        self.rate, self.burst, self.keys = rate, burst, keys
        self._buckets: OrderedDict[Hashable, Bucket] = OrderedDict()

    def take(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Bucket(self.rate, self.burst, now)
            while len(self._buckets) > self.keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now, cost)
