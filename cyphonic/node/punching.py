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
"""

from __future__ import annotations

import logging
import time

import trio

from cyphonic.core import tunnel as core
from cyphonic.errors import ParseError
from cyphonic.wire import tunnel as core_wire
from cyphonic.wire.common import build, locator, locator_text, parse

log = logging.getLogger("cyphonic.signaling")

Address = tuple[str, int]

# Keep Alives sent straight to the peer's NAPT mapping: 300 ms in all
PUNCHES = 8
PUNCH_OPENERS = 2  # of which the first die after our own NAPT
PUNCH_TTL = 2
PUNCH_INTERVAL = 0.04


class HolePuncher:
    def __init__(self, signaling, enabled: bool) -> None:
        self.signaling = signaling
        self.enabled = enabled

    def announce(self, tunnel: core.Tunnel) -> None:
        family = "ipv6" if ":" in tunnel.endpoint[0] else "ipv4"
        observed = self.signaling.registered.get(family, {}).get("observed")
        if observed is None:
            return
        host, _, port = observed.rpartition(":")
        body = build(core_wire.TunnelUpdateBody, dict(locator=locator(host, int(port))))
        self.signaling.packet.send(tunnel, core.TUNNEL_UPDATE, body)

    def on_update(self, tunnel: core.Tunnel, body: bytes) -> None:
        try:
            address = locator_text(parse(core_wire.TunnelUpdateBody, body).locator)
        except ParseError as exc:
            self.signaling.drops("malformed tunnel update", None, str(exc).splitlines()[0])
            return
        if tunnel.relayed and self.enabled and not tunnel.punching:
            if not tunnel.heard_update:
                # our own announcement may have overtaken the peer's tunnel
                # set-up (the responder sends it right behind its Tunnel
                # Response): answer the first one with ours, once
                tunnel.heard_update = True
                self.announce(tunnel)
            tunnel.punching = True
            self.signaling.nursery.start_soon(self.punch, tunnel, address)

    async def punch(self, tunnel: core.Tunnel, address: Address) -> None:
        # The first punches die after our own NAPT (short TTL): they open our
        # mapping without reaching the peer's NAPT, where an unsolicited
        # packet would leave a conntrack entry that makes Linux masquerade
        # give the peer's own punches another source port. Then full punches.
        try:
            for i in range(PUNCHES):
                if not tunnel.relayed or self.signaling.packet.by_index.get(tunnel.local_index) is not tunnel:
                    break
                ttl = PUNCH_TTL if i < PUNCH_OPENERS else None
                challenge = tunnel.challenge_for(address, time.time())
                self.signaling.packet.send_direct(tunnel, core.KEEPALIVE, challenge, address, ttl)
                await trio.sleep(PUNCH_INTERVAL)
        finally:
            tunnel.punching = False
        log.info(
            "hole punching with %s at %s:%s: %s", tunnel.peer.fqdn, *address,
            "relayed still" if tunnel.relayed else "direct",
        )
