"""The NMS's side of relaying (seed: "Route selection process (via TRS)"):
which TRS gets a session, Relay Requests with retries, and TRS health — a
TRS that does not answer is skipped for a while and never assigned then."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field

from cyphonic import crypto
from cyphonic.wire import relay as wire
from cyphonic.wire.common import build, locator_text, parse

log = logging.getLogger("cyphonic.nms")

Address = tuple[str, int]
RETRY = 0.25
ATTEMPTS = 3
DEAD_FOR = 30.0
SESSION_LIFETIME = 120
PROBE_EVERY = 5.0  # health probes: a Relay Request for session 0
PROBE_SESSION = 0
LAST_KEPT = 4096  # pairs whose last TRS is remembered


@dataclass
class PendingRelay:
    path_id: int
    mn_fqdn: str
    cn_fqdn: str
    txid: int
    reply_to: Address
    mn_key: bytes
    tunnel_key: bytes
    temp_key: bytes
    tried: list[Address] = field(default_factory=list)
    trs: Address | None = None
    request: bytes = b""
    attempts: int = 0
    next_try: float = 0.0


class RelayAssignment:
    def __init__(self, trs: list[Address], key: bytes) -> None:
        self.trs = trs
        self.key = key
        self.dead_until: dict[Address, float] = {}
        self.probed: dict[Address, float] = {}  # probe sent, not yet answered
        self.next_probe = 0.0
        self.waiting: dict[int, PendingRelay] = {}
        self._next = 0
        # the TRS of each pair's last complete relayed path: a pair that asks
        # again most likely lost that one (it died, or a path through it
        # failed), so it gets another
        self.last: dict[frozenset[str], Address] = {}

    def healthy(self, now: float) -> list[Address]:
        return [t for t in self.trs if self.dead_until.get(t, 0) <= now]

    def probes(self, now: float) -> list[tuple[bytes, Address]]:
        """Every PROBE_EVERY seconds a probe to each TRS; a TRS that left the
        previous probe unanswered is dead until it answers again."""
        if now < self.next_probe:
            return []
        self.next_probe = now + PROBE_EVERY
        out = []
        for trs in self.trs:
            if trs in self.probed and self.dead_until.get(trs, 0) <= now:
                log.warning("TRS %s:%s missed its health probe: not assigned", *trs)
            if trs in self.probed:
                self.dead_until[trs] = now + DEAD_FOR
            self.probed[trs] = now
            out.append((self._request(PROBE_SESSION, bytes(32), 1, now), trs))
        return out

    def waiting_for(self, mn_fqdn: str, cn_fqdn: str) -> PendingRelay | None:
        for p in self.waiting.values():
            if (p.mn_fqdn, p.cn_fqdn) == (mn_fqdn, cn_fqdn):
                return p
        return None

    def _request(self, session_id: int, tunnel_key: bytes, lifetime: int, now: float) -> bytes:
        body = build(
            wire.RelayRequestBody,
            dict(timestamp=int(now), session_id=session_id, tunnel_key=tunnel_key, lifetime=lifetime),
        )
        header = dict(header=dict(type="RelayRequest", txid=secrets.randbits(32)))
        return crypto.seal_message(wire.RelayRequest, header, self.key, body)

    def ask(self, pending: PendingRelay, now: float) -> list[tuple[bytes, Address]]:
        """Send the session to the next healthy TRS not yet tried ([] if none)."""
        candidates = [t for t in self.healthy(now) if t not in pending.tried]
        if not candidates:
            log.warning("path %08x: no healthy TRS left", pending.path_id)
            return []
        previous = self.last.get(frozenset((pending.mn_fqdn, pending.cn_fqdn)))
        if len(candidates) > 1 and previous in candidates:
            candidates.remove(previous)
        self._next = (self._next + 1) % len(candidates)  # spread sessions
        trs = candidates[self._next % len(candidates)]
        pending.tried.append(trs)
        pending.trs = trs
        pending.request = self._request(pending.path_id, pending.tunnel_key, SESSION_LIFETIME, now)
        pending.attempts, pending.next_try = 1, now + RETRY
        self.waiting[pending.path_id] = pending
        return [(pending.request, trs)]

    def answer(self, data: bytes, source: Address, now: float) -> tuple[PendingRelay | None, dict[str, Address] | None]:
        """(the pending route, TRS locators by family, or None if refused)."""
        _, plain = crypto.open_message(wire.RelayResponse, data, self.key)
        body = parse(wire.RelayResponseBody, plain)
        if body.session_id == PROBE_SESSION:
            if self.probed.pop(source, None) is not None and self.dead_until.pop(source, 0.0):
                log.info("TRS %s:%s answers again", *source)
            return None, None
        pending = self.waiting.get(body.session_id)
        if pending is None or pending.trs != source:
            return None, None
        del self.waiting[body.session_id]
        self.dead_until.pop(source, None)
        if not body.accepted:
            log.warning("TRS %s:%s refused path %08x (full)", *source, body.session_id)
            return pending, None
        locators: dict[str, Address] = {}
        for loc in body.locators:
            locators.setdefault(str(loc.family), locator_text(loc))
        return pending, locators

    def carried(self, mn_fqdn: str, cn_fqdn: str, trs: Address) -> None:
        """A relayed path through `trs` is complete (both ends told)."""
        pair = frozenset((mn_fqdn, cn_fqdn))
        self.last.pop(pair, None)
        self.last[pair] = trs
        while len(self.last) > LAST_KEPT:
            del self.last[next(iter(self.last))]

    def next_timer(self) -> float | None:
        return min([p.next_try for p in self.waiting.values()] + [self.next_probe], default=None)

    def expired(self, now: float) -> tuple[list[tuple[bytes, Address]], list[PendingRelay]]:
        """Requests whose TRS stayed silent: (datagrams to resend, routes
        whose TRS is now marked dead, to be tried on the next one)."""
        resend, out = [], []
        for path_id, p in list(self.waiting.items()):
            if p.next_try > now:
                continue
            trs = p.trs
            assert trs is not None  # ask() picks the TRS before the request waits
            if p.attempts < ATTEMPTS:
                p.attempts += 1
                p.next_try = now + RETRY
                resend.append((p.request, trs))
                continue
            del self.waiting[path_id]
            self.dead_until[trs] = now + DEAD_FOR
            log.warning("TRS %s:%s does not answer: skipped for %.0f s", *trs, DEAD_FOR)
            out.append(p)
        return resend, out
