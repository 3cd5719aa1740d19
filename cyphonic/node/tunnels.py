"""Tunnel establishment for the Signaling Module (seed: "Tunnel
establishment process", direct and via TRS): opening a tunnel as the
initiator, answering a Tunnel Request as the responder, relayed paths, and
handing each tunnel to its supervisor. A mixin of SignalingModule, whose
state (paths announced by the NMS, answered requests, relay links) it uses.
"""

from __future__ import annotations

import logging
import time

import trio

from cyphonic.core import tunnel as core
from cyphonic.node.errors import RouteError, UnknownPeer
from cyphonic.node.supervisor import supervise
from cyphonic.wire.common import TYPE
from cyphonic.wire.tunnel import DATA_TYPES

log = logging.getLogger("cyphonic.signaling")

Address = tuple[str, int]
PATH_LIFETIME = 30.0  # an announced path not used by then is forgotten
# On the reverse path the CN's Tunnel Request can overtake the NMS's answer
# to the MN; the MN holds a few such early requests (bytes only, no state
# derived from them) until the Route Direction names their path.
EARLY_HOLD = 16
EARLY_LIFETIME = 3.0


class TunnelEstablishment:
    def _relayed(self, frame: bytes, source: Address, now: float) -> None:
        """A frame the TRS forwarded: the peer's datagram, handled as if
        it came from the TRS's address (where answers must go)."""
        link = self._links.get(int.from_bytes(frame[1:5], "big")) if len(frame) >= 5 else None
        if link is None:
            self.drops("relayed frame for an unknown session", source)
            return
        inner = link.unwrap(frame)
        if not inner:
            return  # the other side's bind
        if inner[0] in DATA_TYPES:
            self.packet.receive(inner, source, now, via_relay=True)
        elif inner[0] != TYPE["Relayed"]:
            self.receive(inner, source, now)

    def send_path(self, path: core.Path, datagram: bytes, dest: Address) -> None:
        """Signaling on a path: through the relay link (sealed) when relayed."""
        self.sendto(path.relay.wrap(datagram, sealed=True) if path.relay else datagram, dest)

    async def _bind(self, path: core.Path) -> None:
        """Tell the TRS where this (responding) end is, a few times against
        loss, until the initiator's Tunnel Request has come through it."""
        for delay in (0.2, 0.4, 0.8, 1.6):
            if path.path_id in self._answered:
                return
            self.send_path(path, b"", path.peer_address)
            await trio.sleep(delay)

    async def _open_tunnel_logged(self, path: core.Path) -> None:
        try:
            await self._open_tunnel(path)
        except (TimeoutError, RouteError) as exc:
            log.warning("tunnel to %s failed: %s", path.peer.fqdn, exc)

    async def _open_tunnel(self, path: core.Path) -> core.Tunnel:
        initiator = core.Initiator(path, self.me, time.time())
        request = path.relay.wrap(initiator.request, sealed=True) if path.relay else initiator.request
        tunnel = await self.transact(
            ("index", initiator.local_index),
            request,
            path.peer_address,
            initiator.accept_response,
            attempts=6,
        )
        self._expected.pop(path.path_id, None)
        self._install(tunnel)
        return tunnel

    def _tunnel_request(self, data: bytes, source: Address, now: float) -> None:
        path_id = int.from_bytes(data[1:5], "big") if len(data) >= 5 else -1
        answered = self._answered.get(path_id)
        if answered is not None:
            if answered[0] == data:  # a retransmission: the same answer
                self.send_path(answered[2], answered[1], source)
            else:
                self.drops("second tunnel request on a path", source)
            return
        entry = self._expected.get(path_id)
        if entry is None and self._routing:
            # a route selection is in flight: this may be its early request
            for stale in [k for k, v in self._early.items() if now - v[2] > EARLY_LIFETIME]:
                del self._early[stale]
            if len(self._early) < EARLY_HOLD:
                self._early[path_id] = (data, source, now)
                return
        if entry is None or entry[0].initiator:
            self.drops("tunnel request on an unannounced path", source)
            return
        path = entry[0]
        tunnel, response = core.respond(path, self.me, data, source, now)
        del self._expected[path_id]
        self._answered[path_id] = (data, response, path)
        self.send_path(path, response, source)
        self._install(tunnel)
        event = self._established.get(path_id)
        if event is not None:
            event.set()

    def _install(self, tunnel: core.Tunnel) -> None:
        self.packet.install(tunnel)
        if tunnel.relayed and self.puncher.enabled:
            self.puncher.announce(tunnel)
        log.info(
            "tunnel up with %s (%s) via %s:%s", tunnel.peer.fqdn, tunnel.path.process, *tunnel.endpoint
        )
        self.nursery.start_soon(supervise, tunnel, self.packet, self.cfg["keepalive"], self._tunnel_died)

    def _tunnel_died(self, tunnel: core.Tunnel, carried_traffic: bool) -> None:
        if carried_traffic:
            # the peer restarted, or a NAT forgot us: select a route again
            # instead of waiting for the next DNS query, which an
            # application holding a cached answer may never send
            self.nursery.start_soon(self._reroute, tunnel.peer.fqdn)

    async def _reroute(self, fqdn: str) -> None:
        try:
            await self.route_to(fqdn)
        except (UnknownPeer, RouteError, TimeoutError) as exc:
            log.warning("route to %s not re-established: %s", fqdn, exc)

    def _forget_stale_paths(self, now: float) -> None:
        for path_id, (_, at) in list(self._expected.items()):
            if now - at > PATH_LIFETIME:
                del self._expected[path_id]
        while len(self._answered) > 256:
            del self._answered[next(iter(self._answered))]
