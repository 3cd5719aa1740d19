"""Tunnel establishment for the Signaling Module (seed: "Tunnel
establishment process", direct and via TRS): opening a tunnel as the
initiator, answering a Tunnel Request as the responder, relayed paths, and
handing each tunnel to its supervisor. A mixin of SignalingModule, whose
state (paths announced by the NMS, answered requests, relay links) it uses.
"""

from __future__ import annotations

import logging
import random
import time

import trio

from cyphonic.core import tunnel as core
from cyphonic.node.errors import RouteError, UnknownPeer
from cyphonic.node.supervisor import supervise
from cyphonic.wire import tunnel as wire
from cyphonic.wire.common import TYPE, parse
from cyphonic.wire.tunnel import DATA_TYPES

log = logging.getLogger("cyphonic.signaling")

Address = tuple[str, int]
PATH_LIFETIME = 30.0  # an announced path not used by then is forgotten
# On the reverse path the CN's Tunnel Request can overtake the NMS's answer
# to the MN; the MN holds a few such early requests (bytes only, no state
# derived from them) until the Route Direction names their path. Nothing in
# them can be checked before then, so junk is held too: it never replaces a
# held request of the same path (all are tried), and when the hold is full a
# random one makes room, so a flood cannot pin it (the CN retransmits anyway).
EARLY_HOLD = 16
EARLY_LIFETIME = 3.0


class TunnelEstablishment:
    def _relayed(self, frame: bytes, source: Address, now: float) -> None:
        """A frame the TRS forwarded: the peer's datagram, handled as if
        it came from the TRS's address (where answers must go)."""
        link, _ = self._links.get(int.from_bytes(frame[1:5], "big"), (None, 0)) if len(frame) >= 5 else (None, 0)
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
        path_id = parse(wire.TunnelRequest, data).path_id
        answered = self._answered.get(path_id)
        if answered is not None:
            request, response, path, peer = answered
            if request == data and source == peer:  # a retransmission: the same answer
                self.send_path(path, response, source)
            else:  # never to a replayer's address
                self.drops("second tunnel request on a path", source)
            return
        entry = self._expected.get(path_id)
        if entry is None and self._routing:
            self._hold_early(path_id, data, source, now)
            return
        if entry is None or entry[0].initiator:
            self.drops("tunnel request on an unannounced path", source)
            return
        path = entry[0]
        tunnel, response = core.respond(path, self.me, data, source, now)
        del self._expected[path_id]
        self._answered[path_id] = (data, response, path, source)
        self.send_path(path, response, source)
        self._install(tunnel)
        event = self._established.get(path_id)
        if event is not None:
            event.set()

    def _hold_early(self, path_id: int, data: bytes, source: Address, now: float) -> None:
        """A Tunnel Request that may belong to a route selection in flight."""
        early = self._early
        early[:] = [e for e in early if now - e[3] <= EARLY_LIFETIME]
        if any(e[1] == data for e in early):
            return  # a retransmission already held
        if len(early) >= EARLY_HOLD:
            early.pop(random.randrange(len(early)))
            self.drops("early tunnel request hold full", source)
        early.append((path_id, data, source, now))

    def _release_early(self, path_id: int, now: float) -> None:
        """Try every request held for `path_id` now that it is announced."""
        held = [e for e in self._early if e[0] == path_id]
        self._early[:] = [e for e in self._early if e[0] != path_id]
        for _, data, source, at in held:
            if now - at <= EARLY_LIFETIME and path_id in self._expected:
                self.receive(data, source, now)

    def _install(self, tunnel: core.Tunnel) -> None:
        self.packet.install(tunnel)
        if tunnel.relayed and self.puncher.enabled:
            self.puncher.announce(tunnel)
        log.info(
            "tunnel up with %s (%s) via %s:%s", tunnel.peer.fqdn, tunnel.path.process, *tunnel.endpoint
        )
        self.nursery.start_soon(
            supervise, tunnel, self.packet, self.cfg["keepalive"], self._tunnel_died, self.cfg["rekey_after"]
        )

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
        self._forget_links(now)

    def _forget_links(self, now: float) -> None:
        """Relay links of paths that carry no tunnel and were announced too
        long ago to be still in their handshake."""
        live = {t.path.path_id for t in self.packet.by_index.values()} | set(self._expected)
        for path_id, (_, at) in list(self._links.items()):
            if path_id not in live and now - at > PATH_LIFETIME:
                del self._links[path_id]
