"""Hole punching between two nodes behind NAPT, beside their relayed tunnel.

Each end tells the other, through the relayed tunnel (End Key), the address
the NMS sees it at; both then send authenticated Keep Alives straight to the
other's address, each carrying a random challenge. Outgoing ones open each
NAPT for the other's. A punch that gets through is answered straight back
with a Keep Alive Ack echoing its challenge, and makes its source a direct
candidate that the receiver probes in turn. Only an echo that comes back
authenticated from the address it was sent to moves the tunnel off the TRS
(core.Tunnel.confirm): one datagram from a new address never does. A NAPT
that never lets one through leaves the tunnel on the relay.

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
from cyphonic.errors import ParseError
from cyphonic.wire import tunnel as tunnel_wire
from cyphonic.wire.common import build, locator, locator_text, parse

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


class HolePunching:
    # What this mixin uses from SignalingMachine and its other mixins. For the
    # type checker only: a definition here would shadow the real one further
    # along the MRO.
    if TYPE_CHECKING:
        registered: dict[str, dict[str, Any]]
        tunnels: dict[str, core.Tunnel]
        drops: Drops
        timers: Timers
        _events: deque[ev.Event]
        _actions: list[ev.Send | ev.SendOnTunnel]

    def __init__(self, enabled: bool) -> None:
        self.punching = enabled

    def announce(self, tunnel: core.Tunnel) -> None:
        """Tell the peer, through the relayed tunnel, where the NMS sees us."""
        family = "ipv6" if ":" in tunnel.endpoint[0] else "ipv4"
        observed = self.registered.get(family, {}).get("observed")
        if observed is None:
            return
        host, _, port = observed.rpartition(":")
        body = build(tunnel_wire.TunnelUpdateBody, dict(locator=locator(host, int(port))))
        self._actions.append(ev.SendOnTunnel(tunnel, core.TUNNEL_UPDATE, body))

    def tunnel_update(self, tunnel: core.Tunnel, body: bytes, now: float) -> None:
        """The peer's Tunnel Update (authenticated by the data plane)."""
        try:
            address = locator_text(parse(tunnel_wire.TunnelUpdateBody, body).locator)
        except ParseError as exc:
            self.drops("malformed tunnel update", None, str(exc).splitlines()[0])
            return
        if not (tunnel.relayed and self.punching and not tunnel.punching):
            return
        if not tunnel.heard_update:
            # our own announcement may have overtaken the peer's tunnel
            # set-up (the responder sends it right behind its Tunnel
            # Response): answer the first one with ours, once
            tunnel.heard_update = True
            self.announce(tunnel)
        tunnel.punching = True
        for i in range(PUNCHES):
            self.timers.at(now + i * PUNCH_INTERVAL, partial(self._punch, tunnel, address, i))
        self.timers.at(now + PUNCHES * PUNCH_INTERVAL, lambda now: self._punched(tunnel, address))

    def _punch(self, tunnel: core.Tunnel, address: Address, i: int, now: float) -> None:
        # The first punches die after our own NAPT (short TTL): they open our
        # mapping without reaching the peer's NAPT, where an unsolicited
        # packet would leave a conntrack entry that makes Linux masquerade
        # give the peer's own punches another source port. Then full punches.
        if not tunnel.punching or not tunnel.relayed or self.tunnels.get(tunnel.peer.fqdn) is not tunnel:
            self._punched(tunnel, address)
            return
        ttl = PUNCH_TTL if i < PUNCH_OPENERS else None
        self._actions.append(
            ev.SendOnTunnel(tunnel, core.KEEPALIVE, tunnel.challenge_for(address, now), to=address, ttl=ttl)
        )

    def _punched(self, tunnel: core.Tunnel, address: Address) -> None:
        if not tunnel.punching:
            return  # already reported
        tunnel.punching = False
        direct = not tunnel.relayed
        log.info(
            "hole punching with %s at %s:%s: %s", tunnel.peer.fqdn, *address, "direct" if direct else "relayed still"
        )
        self._events.append(ev.PunchFinished(tunnel, address, direct))
