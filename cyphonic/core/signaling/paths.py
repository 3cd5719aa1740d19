"""Tunnel establishment (seed: "Tunnel establishment process", direct and
via TRS) and the path table: every path the NMS named, in one of these
states, whichever side we are on:

    state        we are      what we wait for                      leaves when
    announced    responder   the peer's Tunnel Request             answered, or PATH_LIFETIME
    opening      initiator   the peer's Tunnel Response            established, or attempts run out
    answered     responder   nothing: the Response is kept for     pruned (oldest first)
                             the peer's retransmissions
    established  initiator   nothing                               pruned (oldest first)

A mixin of SignalingMachine. On the reverse path the CN's Tunnel Request
can overtake the NMS's answer to the MN: the MN holds a few such early
requests (bytes only, no state derived from them) until the Route Direction
names their path. Nothing in them can be checked before then, so junk is
held too: it never replaces a held request of the same path (all are
tried), and when the hold is full a random one makes room, so a flood
cannot pin it (the CN retransmits anyway).
"""

from __future__ import annotations

import logging
import random
from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cyphonic.core import handshake
from cyphonic.core import tunnel as core
from cyphonic.core.relay import RelayLink
from cyphonic.core.signaling import events as ev
from cyphonic.wire import relay as relay_wire
from cyphonic.wire import tunnel as wire
from cyphonic.wire.common import TYPE, parse
from cyphonic.wire.tunnel import DATA_TYPES

if TYPE_CHECKING:
    from cyphonic.core.signaling.routes import Selection
    from cyphonic.core.signaling.timers import Timers
    from cyphonic.core.signaling.transactions import Transactions
    from cyphonic.drops import Drops

log = logging.getLogger("cyphonic.signaling")

Address = tuple[str, int]
PATH_LIFETIME = 30.0  # an announced path not used by then is forgotten
KEEP_DONE = 256  # answered / established paths kept for retransmissions
EARLY_HOLD = 16
EARLY_LIFETIME = 3.0
BIND_AT = (0.0, 0.2, 0.6, 1.4)  # a relayed responder tells the TRS where it is
OPEN_ATTEMPTS = 6

ANNOUNCED, OPENING, ANSWERED, ESTABLISHED = "announced", "opening", "answered", "established"


@dataclass
class PathEntry:
    path: core.Path
    state: str
    since: float
    request: bytes = b""  # answered: the Tunnel Request we answered ...
    response: bytes = b""  # ... what we answered ...
    peer: Address | None = None  # ... and where it came from


class TunnelEstablishment:
    # What this mixin uses from SignalingMachine and its other mixins. For the
    # type checker only: a definition here would shadow the real one further
    # along the MRO.
    if TYPE_CHECKING:
        selections: dict[str, Selection]
        punching: bool
        suites: int
        drops: Drops
        transactions: Transactions
        timers: Timers
        _events: deque[ev.Event]

        @property
        def me(self) -> core.PeerInfo: ...
        def receive(self, data: bytes, source: Address, now: float) -> bytes | None: ...
        def route_failed(self, selection: Selection, reason: str, now: float, unknown: bool = False) -> None: ...
        def route_done(self, tunnel: core.Tunnel, now: float) -> None: ...
        def announce(self, tunnel: core.Tunnel, now: float) -> None: ...
        def _send(self, datagram: bytes, dest: Address) -> None: ...

    def __init__(self) -> None:
        self.paths: dict[int, PathEntry] = {}
        self.tunnels: dict[str, core.Tunnel] = {}  # by peer FQDN: the ones this identity established
        self.links: dict[int, tuple[RelayLink, float]] = {}  # path id -> (relay link, announced at)
        self.early: list[tuple[int, bytes, Address, float]] = []  # (path id, request, source, at)
        # tunnel handshakes by (role, result), for the metrics
        self.handshakes: Counter[tuple[str, str]] = Counter()

    # -- initiator ------------------------------------------------------------------------

    def open_tunnel(self, path: core.Path, now: float) -> None:
        initiator = handshake.Initiator(path, self.me, now, self.suites)
        request = path.relay.wrap(initiator.request, sealed=True) if path.relay else initiator.request
        self.paths[path.path_id] = PathEntry(path, OPENING, now)

        def failed(now: float) -> None:
            self.paths.pop(path.path_id, None)
            self.handshakes[("initiator", "timeout")] += 1
            log.warning("tunnel to %s failed: no answer from %s:%s", path.peer.fqdn, *path.peer_address)
            selection = self.selections.get(path.peer.fqdn)
            if selection is not None and selection.path_id == path.path_id:
                self.route_failed(selection, f"{path.peer.fqdn} does not answer", now)

        self.transactions.start(
            ("index", initiator.local_index),
            request,
            path.peer_address,
            now,
            accept=initiator.accept_response,
            attempts=OPEN_ATTEMPTS,
            done=lambda tunnel, now: self._established(tunnel, ESTABLISHED, now),
            failed=failed,
        )

    # -- responder ------------------------------------------------------------------------

    def expect(self, path: core.Path, now: float) -> None:
        """A path on which the peer opens the tunnel to us."""
        self.paths[path.path_id] = PathEntry(path, ANNOUNCED, now)
        if path.relay:
            self._bind(path)  # at once: the initiator's request is about to reach the TRS
            for delay in BIND_AT[1:]:
                self.timers.at(now + delay, lambda now: self._bind(path))
        self._release_early(path.path_id, now)

    def _bind(self, path: core.Path) -> None:
        """Tell the TRS where this (responding) end is, a few times against
        loss, until the initiator's Tunnel Request has come through it."""
        entry = self.paths.get(path.path_id)
        if entry is not None and entry.state == ANNOUNCED:
            self.send_path(path, b"", path.peer_address)

    def _tunnel_request(self, data: bytes, source: Address, now: float) -> None:
        path_id = parse(wire.TunnelRequest, data).path_id
        entry = self.paths.get(path_id)
        if entry is not None and entry.state == ANSWERED:
            if entry.request == data and entry.peer == source:  # a retransmission: the same answer
                self.send_path(entry.path, entry.response, source)
            else:  # never to a replayer's address
                self.drops("second tunnel request on a path", source)
            return
        if entry is None and self.selections:
            self._hold_early(path_id, data, source, now)
            return
        if entry is None or entry.state != ANNOUNCED:
            self.drops("tunnel request on an unannounced path", source)
            return
        tunnel, response = handshake.respond(entry.path, self.me, data, source, now, self.suites)
        entry.state, entry.since = ANSWERED, now
        entry.request, entry.response, entry.peer = data, response, source
        self.send_path(entry.path, response, source)
        self._established(tunnel, ANSWERED, now)

    def _hold_early(self, path_id: int, data: bytes, source: Address, now: float) -> None:
        early = self.early
        early[:] = [e for e in early if now - e[3] <= EARLY_LIFETIME]
        if any(e[1] == data for e in early):
            return  # a retransmission already held
        if len(early) >= EARLY_HOLD:
            early.pop(random.randrange(len(early)))
            self.drops("early tunnel request hold full", source)
        early.append((path_id, data, source, now))

    def _release_early(self, path_id: int, now: float) -> None:
        """Try every request held for `path_id` now that it is announced."""
        held = [e for e in self.early if e[0] == path_id]
        self.early[:] = [e for e in self.early if e[0] != path_id]
        for _, data, source, at in held:
            entry = self.paths.get(path_id)
            if now - at <= EARLY_LIFETIME and entry is not None and entry.state == ANNOUNCED:
                self.receive(data, source, now)

    # -- both -------------------------------------------------------------------------------

    def _established(self, tunnel: core.Tunnel, state: str, now: float) -> None:
        entry = self.paths.get(tunnel.path.path_id)
        if entry is not None:
            entry.state, entry.since = state, now
        self.tunnels[tunnel.peer.fqdn] = tunnel
        self.handshakes[("initiator" if state == ESTABLISHED else "responder", "established")] += 1
        log.info("tunnel up with %s (%s) via %s:%s", tunnel.peer.fqdn, tunnel.path.process, *tunnel.endpoint)
        self._events.append(ev.TunnelEstablished(tunnel))
        if tunnel.relayed and self.punching:
            self.announce(tunnel, now)
        self.route_done(tunnel, now)

    def send_path(self, path: core.Path, datagram: bytes, dest: Address) -> None:
        """Signaling on a path: through the relay link (sealed) when relayed."""
        self._send(path.relay.wrap(datagram, sealed=True) if path.relay else datagram, dest)

    def relayed(self, frame: bytes, source: Address, now: float) -> bytes | None:
        """A frame the TRS forwarded: the peer's datagram, handled as if it
        came from the TRS's address (where answers must go). Returns it if
        it is data, for the data plane; signaling is handled here."""
        session = relay_wire.session_of(frame)
        entry = self.links.get(session) if session is not None else None
        if entry is None:
            self.drops("relayed frame for an unknown session", source)
            return None
        inner = entry[0].unwrap(frame)
        if not inner:
            return None  # the other side's bind
        if inner[0] in DATA_TYPES:
            return inner
        if inner[0] != TYPE["Relayed"]:
            self.receive(inner, source, now)
        return None

    def forget_stale_paths(self, now: float) -> None:
        for path_id, entry in list(self.paths.items()):
            if entry.state in (ANNOUNCED, OPENING) and now - entry.since > PATH_LIFETIME:
                del self.paths[path_id]
        done = [p for p, e in self.paths.items() if e.state in (ANSWERED, ESTABLISHED)]
        for path_id in done[: max(0, len(done) - KEEP_DONE)]:
            del self.paths[path_id]
        self.forget_links(now)

    def forget_links(self, now: float) -> None:
        """Relay links of paths that carry no tunnel and were announced too
        long ago to be still in their handshake."""
        live = {t.path.path_id for t in self.tunnels.values()}
        live |= {p for p, e in self.paths.items() if e.state in (ANNOUNCED, OPENING)}
        for path_id, (_, at) in list(self.links.items()):
            if path_id not in live and now - at > PATH_LIFETIME:
                del self.links[path_id]
