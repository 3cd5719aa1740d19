"""Mobility and failover for one identity (protocols/mobility.md), sans I/O.

When the host's addresses change (the driver learns it from netlink), the
machine

- registers again at once (a round waiting on the old network is abandoned);
- sends each peer on a direct tunnel a Tunnel Update from the new address,
  sealed under the End Key and retransmitted until its Ack: the peer moves
  its endpoint to the update's source (core.Tunnel.open_at), keys and
  virtual IPs stay;
- sends a Keep Alive on each relayed tunnel, sealed for the TRS, which moves
  this end's side of the relay session, and once registered tells the peer
  where the NMS sees it now (a punch round);
- selects the path again where the old one cannot carry on: no address left
  in the tunnel's family, an update nobody acknowledged, a NAT status that
  changed under a relayed tunnel. The old tunnel carries traffic until the
  new one replaces it (make before break).

A path that fails while data flows (the supervisor's probes went
unanswered: a dead TRS, a NAT or router that stopped forwarding) is
selected again the same way, at once. Both ends may notice the failure and
ask at the same time; the NMS keeps one selection per pair under way and
answers the other `in_progress`, so the two never settle on two different
tunnels.

Without any address (no uplink) nothing is tried: new route selections fail
at once (the resolver answers SERVFAIL), tunnels are kept, and the next
address brings the updates above.
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from typing import TYPE_CHECKING, Any

from cyphonic.core import tunnel as core
from cyphonic.core.signaling import events as ev
from cyphonic.core.signaling.routes import Selection
from cyphonic.errors import ParseError
from cyphonic.wire import tunnel as tunnel_wire
from cyphonic.wire.common import build, locator, locator_text, parse

if TYPE_CHECKING:
    from cyphonic.core.signaling.paths import PathEntry
    from cyphonic.core.signaling.timers import Timers
    from cyphonic.drops import Drops

log = logging.getLogger("cyphonic.signaling")

Address = tuple[str, int]
# A Tunnel Update is sent again at these offsets from the first send until
# its Ack arrives; unacknowledged at UPDATE_GIVE_UP, the path is selected again.
UPDATE_AT = (0.0, 0.05, 0.15, 0.35, 0.75)
UPDATE_GIVE_UP = 1.2
MOVES_KEPT = 16
RESELECT_FIRST, RESELECT_MOST = 1.0, 30.0  # retries of a failed re-selection


def family_of(host: str) -> str:
    return "ipv6" if ":" in host else "ipv4"


def _peer_open(path: core.Path) -> bool:
    """Does the peer take datagrams from anywhere (so a Tunnel Update from
    our new address reaches it)? Only if we opened the path straight to
    its registered address: the MN of a direct path, the CN of a reverse
    one. A peer that opened the path to us, or one a punch reached behind
    its NAPT, may drop what comes from an address it never sent to."""
    return path.initiator and path.process in ("TunnelRequestToCN", "TunnelRequestToNATcn")


class Mobility:
    # What this mixin uses from SignalingMachine and its other mixins. For the
    # type checker only: a definition here would shadow the real one further
    # along the MRO.
    if TYPE_CHECKING:
        port: int
        punching: bool
        registered: dict[str, dict[str, Any]]
        tunnels: dict[str, core.Tunnel]
        selections: dict[str, Selection]
        paths: dict[int, PathEntry]
        drops: Drops
        timers: Timers
        _events: deque[ev.Event]
        _actions: list[ev.Send | ev.SendOnTunnel]
        _registering: set[str]
        _round: int

        @property
        def me(self) -> core.PeerInfo: ...
        def register(self, now: float, addresses: list[str], restart: bool = False) -> None: ...
        def route_to(self, fqdn: str, now: float) -> None: ...
        def announce(self, tunnel: core.Tunnel, now: float) -> None: ...
        def punch_update(self, tunnel: core.Tunnel, address: Address, now: float) -> None: ...

    def __init__(self) -> None:
        self.addresses: list[str] | None = None  # the host's locators (None: not told yet)
        self.moves: deque[dict] = deque(maxlen=MOVES_KEPT)
        self.path_changes = 0
        self._moved: dict[str, dict[str, bool]] = {}  # peer fqdn -> NAT status by family before the move
        self._nat_before: dict[str, bool] = {}
        self._reselects: dict[str, float] = {}  # peer fqdn -> the wait before retrying its re-selection

    @property
    def offline(self) -> bool:
        """No address at all: no uplink to reach anything over."""
        return self.addresses == []

    # -- the host moved ------------------------------------------------------------------

    def moved(self, now: float, addresses: list[str]) -> bool:
        """The host's addresses are now `addresses`: False if that is no
        change (the first call only records them)."""
        if self.addresses is None:
            self.addresses = list(addresses)
            return False
        if sorted(addresses) == sorted(self.addresses):
            return False
        self.addresses = list(addresses)
        self.moves.append({"at": now, "locators": list(addresses)})
        if self.registered:  # a move through no uplink at all compares with before it
            self._nat_before = {f: bool(r["nat"]) for f, r in self.registered.items()}
        if not addresses:
            log.warning("no address left: no uplink; tunnels wait for one, route selections fail")
            self._round += 1  # answers to a registration on the old network change nothing
            self._registering.clear()
            self.registered.clear()
            return True
        # registering first: a path selected again below waits for the NMS
        # to know where we are now (a selection on the old locators would
        # get a path to an address we no longer have)
        self.register(now, list(addresses), restart=True)
        for tunnel in list(self.tunnels.values()):
            self._moved[tunnel.peer.fqdn] = self._nat_before
            self._reselects.pop(tunnel.peer.fqdn, None)  # a new network: retries start over
            self._after_move(tunnel, now)
        return True

    def _after_move(self, tunnel: core.Tunnel, now: float) -> None:
        family = family_of(tunnel.endpoint[0])
        mine = [a for a in self.addresses or () if family_of(a) == family]
        if not mine:
            self.reselect(tunnel.peer.fqdn, now, f"no {family} address left")
            return
        if tunnel.relayed:
            # sealed for the TRS: it moves our side of the session there
            self._actions.append(ev.SendOnTunnel(tunnel, core.KEEPALIVE, b""))
            return
        self.send_update(tunnel, (mine[0], self.port), now, on_fail=self._update_failed)

    def _update_failed(self, tunnel: core.Tunnel, now: float) -> None:
        if self.tunnels.get(tunnel.peer.fqdn) is tunnel:
            self.reselect(tunnel.peer.fqdn, now, "the peer did not acknowledge our new address")

    def moved_registration_settled(self, now: float) -> None:
        """The registration after a move is done: keep each moved tunnel,
        or select its path again."""
        moved, self._moved = self._moved, {}
        for fqdn, nat_before in moved.items():
            tunnel = self.tunnels.get(fqdn)
            if tunnel is None:
                continue
            family = family_of(tunnel.endpoint[0])
            registration = self.registered.get(family)
            if registration is None:
                self.reselect(fqdn, now, f"not registered over {family} any more")
            elif tunnel.relayed:
                if bool(registration["nat"]) != nat_before.get(family, True):
                    self.reselect(fqdn, now, "NAT status changed")
                elif self.punching:
                    tunnel.punch_retry = 0.0
                    self.announce(tunnel, now)  # where the NMS sees us now: punch again
            elif tunnel.update_nonce is not None and not _peer_open(tunnel.path):
                # the peer may sit behind a NAPT that takes nothing from our
                # new address: the NMS knows the way
                self.reselect(fqdn, now, "a peer that may be behind NAPT has not heard from our new address")

    # -- Tunnel Updates -------------------------------------------------------------------

    def send_update(self, tunnel: core.Tunnel, address: Address, now: float, on_fail=None) -> None:
        """A Tunnel Update naming `address`, sent again until acknowledged;
        `on_fail(tunnel, now)` if it never is."""
        nonce = secrets.token_bytes(tunnel_wire.UPDATE_NONCE)
        tunnel.update_nonce = nonce
        body = build(tunnel_wire.TunnelUpdateBody, dict(locator=locator(*address), nonce=nonce))

        def resend(now: float) -> None:
            if tunnel.update_nonce == nonce and self.tunnels.get(tunnel.peer.fqdn) is tunnel:
                self._actions.append(ev.SendOnTunnel(tunnel, core.TUNNEL_UPDATE, body))

        def give_up(now: float) -> None:
            if tunnel.update_nonce == nonce:
                tunnel.update_nonce = None
                if on_fail is not None:
                    on_fail(tunnel, now)

        for delay in UPDATE_AT:
            self.timers.at(now + delay, resend)
        self.timers.at(now + UPDATE_GIVE_UP, give_up)

    def tunnel_message(self, tunnel: core.Tunnel, type_: int, body: bytes, now: float) -> None:
        """A Tunnel Update or Tunnel Update Ack the data plane authenticated."""
        try:
            if type_ == core.TUNNEL_UPDATE_ACK:
                nonce = bytes(parse(tunnel_wire.TunnelUpdateAckBody, body).nonce)
                if tunnel.update_nonce is not None and secrets.compare_digest(nonce, tunnel.update_nonce):
                    tunnel.update_nonce = None
                return
            update = parse(tunnel_wire.TunnelUpdateBody, body)
        except ParseError as exc:
            self.drops("malformed tunnel update", None, str(exc).splitlines()[0])
            return
        ack = build(tunnel_wire.TunnelUpdateAckBody, dict(nonce=bytes(update.nonce)))
        self._actions.append(ev.SendOnTunnel(tunnel, core.TUNNEL_UPDATE_ACK, ack))
        self.punch_update(tunnel, locator_text(update.locator), now)

    # -- selecting the path again ---------------------------------------------------------

    def reselect(self, fqdn: str, now: float, why: str, retry: bool = False) -> None:
        """Route selection for a peer we have a tunnel with; the tunnel it
        brings replaces the old one (RouteSelected or RouteFailed follows).
        `retry`: the same change tried again (not counted again)."""
        if fqdn in self.selections or self.offline:
            return
        log.info("selecting the path to %s again: %s", fqdn, why)
        self.path_changes += not retry
        self._reselects.setdefault(fqdn, RESELECT_FIRST)
        if self._registering:
            # the NMS must know where we are now first (registration_settled asks)
            self.selections[fqdn] = Selection(fqdn, now, state="re-registering", retried=True)
        else:
            self.route_to(fqdn, now)

    def reselect_failed(self, fqdn: str, now: float) -> None:
        """A path re-selection failed (the NMS had stale locators, the peer
        did not open the path, no TRS answered): while the tunnel it was to
        replace hears nothing, try again, each time twice as late."""
        wait = self._reselects.get(fqdn)
        tunnel = self.tunnels.get(fqdn)
        if wait is None or tunnel is None:
            self._reselects.pop(fqdn, None)
            return
        self._reselects[fqdn] = min(wait * 2, RESELECT_MOST)
        failed = now

        def again(now: float) -> None:
            if self.tunnels.get(fqdn) is tunnel and tunnel.last_received < failed and fqdn in self._reselects:
                self.reselect(fqdn, now, f"retrying after {wait:.0f} s", retry=True)

        self.timers.at(now + wait, again)

    def reselected(self, fqdn: str) -> None:
        """A tunnel to `fqdn` is up: no retry is due."""
        self._reselects.pop(fqdn, None)

    def path_failed(self, tunnel: core.Tunnel, now: float) -> None:
        """The supervisor's probes went unanswered while data flowed. Both
        ends may ask at once: the NMS answers the second with `in_progress`
        and the first's path completes both (routes._await_peer)."""
        if self.tunnels.get(tunnel.peer.fqdn) is tunnel and not self.offline:
            self.reselect(tunnel.peer.fqdn, now, "the path failed")

    def next_punch(self, tunnel: core.Tunnel, now: float, first: float, most: float) -> None:
        """A relayed tunnel whose punch failed tries again later, each time
        twice as late (a NAPT's mapping behaviour can change, and the peer
        may move). The tunnel's initiator keeps the pace; the peer answers
        each round with its own announcement (punching.punch_update)."""
        if not tunnel.path.initiator:
            return
        tunnel.punch_retry = first if tunnel.punch_retry <= 0 else min(tunnel.punch_retry * 2, most)
        due = now + tunnel.punch_retry
        tunnel.punch_due = due

        def again(now: float) -> None:
            if tunnel.punch_due != due:
                return  # a later round set another time
            if self.tunnels.get(tunnel.peer.fqdn) is tunnel and tunnel.relayed and not tunnel.punching:
                self.announce(tunnel, now)

        self.timers.at(due, again)

    def mobility_status(self) -> dict:
        return {
            "moves": [dict(m) for m in self.moves],
            "path_changes": self.path_changes,
            "offline": self.offline,
        }
