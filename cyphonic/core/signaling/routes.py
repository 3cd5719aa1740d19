"""Route selection (seed: "Route selection process"), for both ends:

- as the MN: a DNS query asks for a peer; a Direction Request goes to the
  NMS; its Route Direction names the path, and we open the tunnel
  (TunnelRequestToCN) or wait for the peer to open it (TunnelRequestToNATcn,
  or the responding side of TunnelRequestToTRS);
- as the CN: the NMS's Route Direction to CN announces a path; we ack it
  (to the NMS only) and open or expect the tunnel.

A mixin of SignalingMachine. A route selection in flight is one Selection;
what each path is doing is the path table in `paths`.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cyphonic import crypto
from cyphonic.core import tunnel as core
from cyphonic.core.freshness import MAX_SKEW, Freshness
from cyphonic.core.relay import RelayLink
from cyphonic.core.signaling import events as ev
from cyphonic.errors import AuthenticationError, ParseError
from cyphonic.timings import Timings
from cyphonic.wire import signaling as wire
from cyphonic.wire.common import build, locator_text, parse

if TYPE_CHECKING:
    from cyphonic.core.login import Grant
    from cyphonic.core.signaling.timers import Timers
    from cyphonic.drops import Drops

log = logging.getLogger("cyphonic.signaling")

Address = tuple[str, int]
# Relay links held for announced paths and live tunnels; beyond this, new
# relayed paths are refused rather than evicting a link a tunnel still uses.
MAX_LINKS = 256
REACKS = 3  # a Route Direction to CN repeated by the NMS is acked again this often at most
RESPONDER_WAIT = 5.0  # how long the MN waits for the peer's Tunnel Request


class RouteError(Exception):
    """A route selection that cannot succeed (told to the waiting resolver)."""


@dataclass
class Selection:
    """The MN's route selection for one peer, from DNS query to tunnel."""

    fqdn: str
    started: float
    state: str = "asking"  # asking -> (re-registering ->) opening | awaiting request
    retried: bool = False
    opened: float = 0.0
    path_id: int | None = None


class RouteSelection:
    # What this mixin uses from SignalingMachine and its other mixins. For the
    # type checker only: a definition here would shadow the real one further
    # along the MRO.
    if TYPE_CHECKING:
        grant: Grant | None
        nms: dict[str, Address]
        drops: Drops
        timers: Timers
        tunnels: dict[str, core.Tunnel]
        links: dict[int, tuple[RelayLink, float]]
        _events: deque[ev.Event]
        _registering: set[str]

        def nms_request(
            self,
            type_: str,
            body: bytes,
            now: float,
            *,
            done: Callable[[tuple[str, bytes], float], None],
            failed: Callable[[float], None],
            family: str | None = None,
        ) -> None: ...
        def open_tunnel(self, path: core.Path, now: float) -> None: ...
        def expect(self, path: core.Path, now: float) -> None: ...
        def forget_links(self, now: float) -> None: ...
        def _send(self, datagram: bytes, dest: Address) -> None: ...
        def moved_registration_settled(self, now: float) -> None: ...
        def reselect_failed(self, fqdn: str, now: float) -> None: ...
        def reselected(self, fqdn: str) -> None: ...

        @property
        def offline(self) -> bool: ...

    def __init__(self) -> None:
        self.selections: dict[str, Selection] = {}
        # the last 1000 for `cyphonic status`, cumulative buckets for the metrics
        self.route_ms = Timings(maxlen=1000)
        self.tunnel_ms = Timings(maxlen=1000)
        self._directions = Freshness(MAX_SKEW, capacity=4096)  # Route Directions to CN seen
        self._reacks: dict[int, int] = {}

    # -- as the MN -------------------------------------------------------------------

    def route_to(self, fqdn: str, now: float) -> None:
        """Select a route to `fqdn` and open the tunnel: RouteSelected or
        RouteFailed follows. A selection already in flight is joined."""
        if fqdn in self.selections:
            return
        if self.offline:
            self._events.append(ev.RouteFailed(fqdn, "no uplink: this host has no address"))
            return
        selection = self.selections[fqdn] = Selection(fqdn, now)
        self._ask(selection, now)

    def _ask(self, selection: Selection, now: float) -> None:
        selection.state = "asking"
        body = build(wire.DirectionRequestBody, dict(timestamp=int(now), target=selection.fqdn))
        self.nms_request(
            "DirectionRequest",
            body,
            now,
            done=lambda reply, now: self._directed(selection, reply, now),
            failed=lambda now: self.route_failed(selection, "no answer from the NMS", now),
        )

    def _directed(self, selection: Selection, reply: tuple[str, bytes], now: float) -> None:
        kind, plain = reply
        try:
            if kind == "SignalingError":
                err = parse(wire.SignalingErrorBody, plain)
                if str(err.code) == "not_registered" and not selection.retried:
                    # the NMS restarted: register, then ask again (registration_settled)
                    selection.retried, selection.state = True, "re-registering"
                    self._events.append(ev.RegistrationDue())
                    return
                if str(err.code) == "in_progress":
                    # the peer's selection to us names the path: its tunnel completes ours
                    self._await_peer(selection, now)
                    return
                if str(err.code) == "unknown_peer":
                    self.route_failed(selection, "no such node", now, unknown=True)
                else:
                    self.route_failed(selection, f"{err.code} ({err.detail})", now)
                return
            path = self.path_from(self._fresh_direction(plain, now), now)
        except (ParseError, AuthenticationError, RouteError) as exc:
            self.route_failed(selection, str(exc).splitlines()[0], now)
            return
        self.route_ms.append((now - selection.started) * 1000)
        log.info("route selection %s: %s, path %08x", selection.fqdn, path.process, path.path_id)
        selection.opened, selection.path_id = now, path.path_id
        self._events.append(ev.RouteDirected(selection.fqdn, path.peer))
        if path.initiator:
            selection.state = "opening"
            self.open_tunnel(path, now)
        else:
            self.expect(path, now)
            self._await_peer(selection, now)

    def _await_peer(self, selection: Selection, now: float) -> None:
        """The peer opens the tunnel; its establishment ends the selection (route_done)."""
        selection.state = "awaiting request"
        selection.opened = selection.opened or now

        def give_up(now: float) -> None:
            if self.selections.get(selection.fqdn) is selection and selection.state == "awaiting request":
                self.route_failed(selection, f"{selection.fqdn} did not open the tunnel", now)

        self.timers.at(now + RESPONDER_WAIT, give_up)

    def registration_settled(self, now: float) -> None:
        """A registration finished (either way): selections that waited for it ask again."""
        if self._registering:
            return
        self.moved_registration_settled(now)
        for selection in list(self.selections.values()):
            if selection.state == "re-registering":
                self._ask(selection, now)

    def route_failed(self, selection: Selection, reason: str, now: float, unknown: bool = False) -> None:
        if self.selections.get(selection.fqdn) is selection:
            del self.selections[selection.fqdn]
        self._events.append(ev.RouteFailed(selection.fqdn, reason, unknown))
        self.reselect_failed(selection.fqdn, now)

    def route_done(self, tunnel: core.Tunnel, now: float) -> None:
        self.reselected(tunnel.peer.fqdn)
        selection = self.selections.pop(tunnel.peer.fqdn, None)
        if selection is not None:
            self.tunnel_ms.append((now - selection.opened) * 1000)
            self._events.append(ev.RouteSelected(selection.fqdn, tunnel.peer))

    def tunnel_closed(self, tunnel: core.Tunnel, carried_traffic: bool, now: float) -> None:
        """The data plane closed a silent tunnel. If it was carrying data
        (the peer restarted, or a NAT forgot us) select a route again now,
        instead of waiting for a DNS query an application holding a cached
        answer may never send."""
        if self.tunnels.get(tunnel.peer.fqdn) is tunnel:
            del self.tunnels[tunnel.peer.fqdn]
        if carried_traffic:
            self.route_to(tunnel.peer.fqdn, now)

    # -- the path a Route Direction names ----------------------------------------------

    def _fresh_direction(self, plain: bytes, now: float):
        body = parse(wire.RouteDirectionBody, plain)
        if abs(now - body.timestamp) > MAX_SKEW:
            raise AuthenticationError("stale route direction")
        return body

    def path_from(self, body, now: float) -> core.Path:
        process, initiator = str(body.process), str(body.role) == "initiator"
        relay = None
        if process == "TunnelRequestToTRS":
            if len(self.links) >= MAX_LINKS:
                self.forget_links(now)
            if len(self.links) >= MAX_LINKS:
                raise RouteError("too many relayed paths held; refusing a new one")
            # the Tunnel Key (shared with the TRS) authenticates the relayed
            # frames; the hellos, and so the End Keys, use the Temp Key only
            relay = RelayLink(body.path_id, bytes(body.tunnel_key), responder=not initiator, sequence=int(now * 1e9))
            self.links[body.path_id] = (relay, now)
        return core.Path(
            path_id=body.path_id,
            process=process,
            initiator=initiator,
            peer=core.PeerInfo(
                body.peer_fqdn,
                ipaddress.IPv4Address(bytes(body.peer_vip4)),
                ipaddress.IPv6Address(bytes(body.peer_vip6)),
            ),
            peer_address=locator_text(body.peer_locator),
            tunnel_key=bytes(body.temporary_key) if relay else bytes(body.tunnel_key),
            relay=relay,
        )

    # -- as the CN ----------------------------------------------------------------------

    def _route_direction_to_cn(self, data: bytes, source: Address, now: float) -> None:
        """The NMS announces a route: expect (or open) a tunnel, then ack.
        Each direction is acted on once; a replay (from anywhere, at any
        time) creates nothing and draws no answer."""
        if self.grant is None:
            raise AuthenticationError("not logged in")
        _, plain = crypto.open_message(wire.NmsReply, data, self.grant.session_key)
        body = parse(wire.RouteDirectionBody, plain)
        why = self._directions.refuse(body.path_id, body.timestamp, now)
        nms = self.nms.get("ipv6" if ":" in source[0] else "ipv4")
        if why == "replayed" and source == nms and self._reacks.get(body.path_id, REACKS) < REACKS:
            # the NMS retransmits when our ack was lost: ack again, a few times at most
            self._reacks[body.path_id] += 1
            self._ack(body.path_id, nms, now)
            return
        if why is not None:
            self.drops(f"{why} route direction", source)
            return
        try:
            path = self.path_from(body, now)
        except RouteError as exc:
            self.drops("route direction refused", source, str(exc))
            return
        log.info("route direction from NMS: %s with %s, path %08x", path.process, path.peer.fqdn, path.path_id)
        self._reacks[path.path_id] = 0
        while len(self._reacks) > MAX_LINKS:
            del self._reacks[next(iter(self._reacks))]
        if path.initiator:
            self.open_tunnel(path, now)
        else:
            self.expect(path, now)
        if nms is not None:  # the ack goes to our NMS, never to whoever sent the datagram
            self._ack(path.path_id, nms, now)

    def _ack(self, path_id: int, nms: Address, now: float) -> None:
        g = self.grant
        assert g is not None  # _route_direction_to_cn opened the direction under it
        body = build(wire.AckBody, dict(timestamp=int(now), path_id=path_id))
        fields = dict(header=dict(type="RouteDirectionAck", txid=secrets.randbits(32)), ticket=g.ticket)
        self._send(crypto.seal_message(wire.NmsRequest, fields, g.session_key, body), nms)
