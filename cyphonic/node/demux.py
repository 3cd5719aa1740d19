"""The demultiplexer in front of the shared sockets: one UDP socket per
address family carries the signaling of every identity a process runs (a
node: one; the adapter: its own and one per general node). Each signaling
datagram goes to the identity whose machine claims it (transaction id,
receiver index, path id, relay session, session key); data goes to the
Packet Handling Module by receiver index, never through here."""

from __future__ import annotations

import logging
from collections.abc import Callable

from cyphonic.drops import Drops
from cyphonic.wire.common import TYPE

log = logging.getLogger("cyphonic.signaling")

Address = tuple[str, int]
TUNNEL_REQUEST = TYPE["TunnelRequest"]


class Demultiplexer:
    def __init__(self) -> None:
        self.identities: list = []  # SignalingModule, one per identity
        # exchanges outside any identity's machine (the adapter's Node
        # Information Request): (claims, receive)
        self.handlers: list[tuple[Callable[[bytes], bool], Callable[[bytes, Address, float], None]]] = []
        self.drops = Drops(log)

    def add(self, signaling) -> None:
        self.identities.append(signaling)

    def remove(self, signaling) -> None:
        if signaling in self.identities:
            self.identities.remove(signaling)

    def receive(self, data: bytes, source: Address, now: float) -> None:
        for claims, receive in self.handlers:
            if claims(data):
                receive(data, source, now)
                return
        identities = self.identities
        if len(identities) == 1:  # the machine checks and counts everything itself
            identities[0].receive(data, source, now)
            return
        for signaling in identities:
            if signaling.machine.claims(data):
                signaling.receive(data, source, now)
                return
        if data and data[0] == TUNNEL_REQUEST:
            # a Tunnel Request may overtake the Route Direction that names its
            # path: every identity with a route selection in flight holds it
            waiting = [s for s in identities if s.machine.selections]
            for signaling in waiting:
                signaling.receive(data, source, now)
            if waiting:
                return
        self.drops("signaling for no identity here", source)
