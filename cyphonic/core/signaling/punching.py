"""Hole punching between two nodes behind NAPT, beside their relayed tunnel.

Each end tells the other, through the relayed tunnel (End Key), the address
the NMS sees it at (a Tunnel Update, sent again until acknowledged); both
then send authenticated Keep Alives straight to the other's address, each
carrying a random challenge. Outgoing ones open each NAPT for the other's.
A punch that gets through is answered straight back with a Keep Alive Ack
echoing its challenge, and makes its source a direct candidate that the
receiver probes in turn. Only an echo that comes back authenticated from
the address it was sent to moves the tunnel off the TRS
(core.Tunnel.confirm): one datagram from a new address never does. A NAPT
that never lets one through leaves the tunnel on the relay, and the round
is tried again later with backoff (5 s, doubling up to 5 minutes).

A mixin of SignalingMachine: the punches are timers, sent by the data plane
(SendOnTunnel) because they are sealed under the End Key.
"""

from __future__ import annotations

import logging
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any

from cyphonic.core import tunnel as core
from cyphonic.core.signaling import events as ev

if TYPE_CHECKING:
    from cyphonic.core.signaling.timers import Timers
    from cyphonic.drops import Drops

log = logging.getLogger("cyphonic.signaling")

Address = tuple[str, int]

# Keep Alives sent straight to the peer's NAPT mapping: 300 ms in all
PUNCHES = 8
PUNCH_OPENERS = 2  # of which the first die after our own NAPT
PUNCH_TTL = 2
PUNCH_INTERVAL = 0.04
# A round that stays relayed is tried again after 5 s, then twice as late each time
PUNCH_RETRY_FIRST = 5.0
PUNCH_RETRY_MOST = 300.0
ANSWER_HOLDOFF = 1.0  # an update that comes this soon after our own announcement answers it


class HolePunching:
    # What this mixin uses from SignalingMachine and its other mixins. For the
    # type checker only: a definition here would shadow the real one further
    # along the MRO.
    if TYPE_CHECKING:
        registered: dict[str, dict[str, Any]]
        addresses: list[str] | None
        tunnels: dict[str, core.Tunnel]
        drops: Drops
        timers: Timers
        _events: deque[ev.Event]
        _actions: list[ev.Send | ev.SendOnTunnel]

        def send_update(self, tunnel: core.Tunnel, address: Address, now: float, on_fail=None) -> None: ...
        def next_punch(self, tunnel: core.Tunnel, now: float, first: float, most: float) -> None: ...

    def __init__(self, enabled: bool) -> None:
        self.punching = enabled

    def announce(self, tunnel: core.Tunnel, now: float) -> None:
        """Tell the peer, through the relayed tunnel, where the NMS sees us
        (a Tunnel Update, sent again until acknowledged)."""
        family = "ipv6" if ":" in tunnel.endpoint[0] else "ipv4"
        observed = self.registered.get(family, {}).get("observed")
        if observed is None:
            return
        host, _, port = observed.rpartition(":")
        tunnel.announced = now
        self.send_update(tunnel, (host, int(port)), now)

    def punch_update(self, tunnel: core.Tunnel, address: Address, now: float) -> None:
        """The peer's Tunnel Update named `address`: on a relayed tunnel,
        punch towards it."""
        if not (tunnel.relayed and self.punching and not tunnel.punching):
            return
        family = "ipv6" if ":" in address[0] else "ipv4"
        if self.addresses is not None and all(("ipv6" if ":" in a else "ipv4") != family for a in self.addresses):
            return  # relayed across families: no direct path to punch
        if now - tunnel.announced > ANSWER_HOLDOFF:
            # the peer starts a round (its first, or a retry, or it moved):
            # ours must run at the same time, so it hears where we are; an
            # update that answers ours is not answered again
            self.announce(tunnel, now)
        tunnel.punching = True
        for i in range(PUNCHES):
            self.timers.at(now + i * PUNCH_INTERVAL, partial(self._punch, tunnel, address, i))
        self.timers.at(now + PUNCHES * PUNCH_INTERVAL, lambda now: self._punched(tunnel, address, now))

    def _punch(self, tunnel: core.Tunnel, address: Address, i: int, now: float) -> None:
        # The first punches die after our own NAPT (short TTL): they open our
        # mapping without reaching the peer's NAPT, where an unsolicited
        # packet would leave a conntrack entry that makes Linux masquerade
        # give the peer's own punches another source port. Then full punches.
        if not tunnel.punching or not tunnel.relayed or self.tunnels.get(tunnel.peer.fqdn) is not tunnel:
            self._punched(tunnel, address, now)
            return
        ttl = PUNCH_TTL if i < PUNCH_OPENERS else None
        self._actions.append(
            ev.SendOnTunnel(tunnel, core.KEEPALIVE, tunnel.challenge_for(address, now), to=address, ttl=ttl)
        )

    def _punched(self, tunnel: core.Tunnel, address: Address, now: float) -> None:
        if not tunnel.punching:
            return  # already reported
        tunnel.punching = False
        direct = not tunnel.relayed
        log.info(
            "hole punching with %s at %s:%s: %s", tunnel.peer.fqdn, *address, "direct" if direct else "relayed still"
        )
        self._events.append(ev.PunchFinished(tunnel, address, direct))
        if not direct and self.tunnels.get(tunnel.peer.fqdn) is tunnel:
            self.next_punch(tunnel, now, PUNCH_RETRY_FIRST, PUNCH_RETRY_MOST)
