"""Requests awaiting an authenticated reply, retransmitted with backoff.

One table for every request a Signaling machine makes (login, registration,
route selection, Tunnel Request): the key is what the reply carries (a
transaction id, or the initiator's receiver index), so a duplicate reply
finds nothing and is dropped, and a reply that fails to verify leaves the
request waiting: a forger can neither answer nor cancel it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

Address = tuple[str, int]

FIRST_RETRY = 0.3
MAX_RETRY = 2.0
ATTEMPTS = 5


@dataclass
class Transaction:
    datagram: bytes
    dest: Address
    accept: Callable[[bytes, Address, float], Any]  # the reply's value, or raises
    done: Callable[[Any, float], None]  # with that value
    failed: Callable[[float], None]  # no valid reply after every attempt
    attempts: int
    next_at: float
    delay: float = FIRST_RETRY
    sent: int = 1


class Transactions:
    def __init__(self) -> None:
        self._open: dict[Hashable, Transaction] = {}
        self.outbox: list[tuple[bytes, Address]] = []

    def start(
        self,
        key: Hashable,
        datagram: bytes,
        dest: Address,
        now: float,
        *,
        accept,
        done,
        failed,
        attempts: int = ATTEMPTS,
    ) -> None:
        self._open[key] = Transaction(datagram, dest, accept, done, failed, attempts, now + FIRST_RETRY)
        self.outbox.append((datagram, dest))

    def __contains__(self, key: Hashable) -> bool:
        return key in self._open

    def reply(self, key: Hashable, data: bytes, source: Address, now: float) -> bool:
        """Hand a reply to its request; False if none waits for it. The
        request's `accept` may raise ParseError/AuthenticationError: the
        reply is then refused and the request keeps waiting."""
        t = self._open.get(key)
        if t is None:
            return False
        value = t.accept(data, source, now)
        del self._open[key]
        t.done(value, now)
        return True

    def next_timer(self) -> float | None:
        return min((t.next_at for t in self._open.values()), default=None)

    def handle_timer(self, now: float) -> None:
        for key, t in list(self._open.items()):
            if t.next_at > now or self._open.get(key) is not t:
                continue
            if t.sent >= t.attempts:
                del self._open[key]
                t.failed(now)
                continue
            t.delay = min(t.delay * 2, MAX_RETRY)
            t.next_at = now + t.delay
            t.sent += 1
            self.outbox.append((t.datagram, t.dest))

    def cancel(self, key: Hashable) -> None:
        self._open.pop(key, None)
