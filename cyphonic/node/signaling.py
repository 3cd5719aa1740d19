"""Signaling Module (seed): login to the AS, registration with the NMS,
route selection triggered by DNS, and tunnel establishment with peers.

Every request has a transaction id and is retransmitted with backoff until
an authenticated reply with that id arrives; a reply that fails to verify
is dropped and the wait goes on, so a forger can neither answer nor cancel.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import trio

from cyphonic import crypto
from cyphonic.core import tunnel as core
from cyphonic.core.freshness import MAX_SKEW, Freshness
from cyphonic.core.login import Grant, LoginClient, LoginRefused
from cyphonic.core.relay import RelayLink
from cyphonic.drops import Drops
from cyphonic.errors import AuthenticationError, ParseError
from cyphonic.kernel.netlink import global_addresses
from cyphonic.node.punching import HolePuncher
from cyphonic.node.errors import RouteError, UnknownPeer
from cyphonic.node.tunnels import TunnelEstablishment
from cyphonic.wire import signaling as wire
from cyphonic.wire.common import TYPE, build, locator, locator_text, parse

log = logging.getLogger("cyphonic.signaling")

Address = tuple[str, int]
NMS_REPLIES = {TYPE[n] for n in ("RegistrationResponse", "RouteDirection", "SignalingError")}
# Relay links held for announced paths and live tunnels; beyond this, new
# relayed paths are refused rather than evicting a link a tunnel still uses.
MAX_LINKS = 256
LOGIN_BACKOFF_MAX = 30.0
REACKS = 3


class Fatal(Exception):
    """The node cannot go on (e.g. the AS refused its certificate)."""


@dataclass
class _Waiter:
    validate: Callable[[bytes, Address, float], Any]
    event: trio.Event = field(default_factory=trio.Event)
    result: Any = None


def family_of(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class SignalingModule(TunnelEstablishment):
    def __init__(self, cfg: dict, identity: crypto.Identity, certificate: bytes, ca_public: bytes, sockets, packet) -> None:
        self.cfg = cfg
        self.identity = identity
        self.certificate = certificate
        self.ca_public = ca_public
        self.sockets: dict[int, socket.socket] = sockets
        self.packet = packet
        self.grant: Grant | None = None
        self.registered: dict[str, Any] = {}
        self.drops = Drops(log)
        self.route_ms: deque[float] = deque(maxlen=1000)
        self.tunnel_ms: deque[float] = deque(maxlen=1000)
        self._waiters: dict[tuple[str, int], _Waiter] = {}
        self._expected: dict[int, tuple[core.Path, float]] = {}
        self._answered: dict[int, tuple[bytes, bytes, core.Path]] = {}
        self._early: list[tuple[int, bytes, Address, float]] = []  # (path id, request, source, at)
        self._links: dict[int, tuple[RelayLink, float]] = {}  # path id -> (link, announced at)
        self._directions = Freshness(MAX_SKEW, capacity=4096)  # Route Directions to CN seen
        self._reacks: dict[int, int] = {}
        self._established: dict[int, trio.Event] = {}
        self._routing: dict[str, trio.Event] = {}
        self._sequence = time.time_ns()
        self.nursery: trio.Nursery | None = None
        self.local_addresses = global_addresses
        self.puncher = HolePuncher(self, cfg["hole_punching"])
        self.nms = {family_of(a[0]): a for a in reversed(cfg["nms"]) if family_of(a[0]) in sockets}

    @property
    def me(self) -> core.PeerInfo:
        g = self.grant
        return core.PeerInfo(g.fqdn, g.vip4, g.vip6)

    # -- plumbing -------------------------------------------------------------

    def sendto(self, data: bytes, dest: Address) -> None:
        sock = self.sockets.get(family_of(dest[0]))
        if sock is None:
            return
        try:
            sock.sendto(data, dest)
        except OSError as exc:
            self.drops("signaling send failed", dest, str(exc))

    async def transact(self, key: tuple[str, int], datagram: bytes, dest: Address, validate, attempts: int = 5) -> Any:
        waiter = self._waiters[key] = _Waiter(validate)
        try:
            delay = 0.3
            for _ in range(attempts):
                self.sendto(datagram, dest)
                with trio.move_on_after(delay):
                    await waiter.event.wait()
                    return waiter.result
                delay = min(delay * 2, 2.0)
            raise TimeoutError(f"no answer from {dest[0]}:{dest[1]}")
        finally:
            del self._waiters[key]

    def receive(self, data: bytes, source: Address, now: float) -> None:
        """Every non-data datagram on the node's sockets comes here."""
        kind = data[0]
        try:
            if kind in (TYPE["LoginResponse"], TYPE["LoginReject"]) or kind in NMS_REPLIES:
                self._reply(("txid", int.from_bytes(data[2:6], "big")), data, source, now)
            elif kind == TYPE["TunnelResponse"]:
                self._reply(("index", int.from_bytes(data[9:13], "big")), data, source, now)
            elif kind == TYPE["RouteDirectionToCN"]:
                self._route_direction_to_cn(data, source, now)
            elif kind == TYPE["TunnelRequest"]:
                self._tunnel_request(data, source, now)
            elif kind == TYPE["Relayed"]:
                self._relayed(data, source, now)
            else:
                self.drops("unexpected message type", source, hex(kind))
        except ParseError as exc:
            self.drops("malformed signaling", source, str(exc).splitlines()[0])
        except AuthenticationError as exc:
            self.drops("unauthenticated signaling", source, exc.reason)

    def _reply(self, key, data: bytes, source: Address, now: float) -> None:
        waiter = self._waiters.get(key)
        if waiter is None or waiter.event.is_set():
            self.drops("unsolicited reply", source)
            return
        try:
            waiter.result = waiter.validate(data, source, now)
        except LoginRefused as exc:
            waiter.result = exc
        waiter.event.set()

    # -- authentication -------------------------------------------------------

    async def login(self) -> Grant:
        """Log in, retrying with backoff until an AS grants it. Only a
        refusal signed by an AS of our CA ends the daemon; answers that do
        not verify are dropped (a forger cannot stop us), and an AS that
        cannot decide now ("unavailable") is asked again later."""
        backoff = 1.0
        while True:
            reasons = []
            for address in self.cfg["auth"]:
                if family_of(address[0]) not in self.sockets:
                    continue
                client = LoginClient(self.identity, self.certificate, self.ca_public, time.time())
                rejected: list[str] = []

                def accept(data: bytes, source: Address, now: float, client=client, rejected=rejected) -> Grant:
                    try:
                        return client.accept(data, now)
                    except AuthenticationError as exc:
                        rejected.append(exc.reason)
                        raise

                try:
                    result = await self.transact(("txid", client.txid), client.request, address, accept)
                except TimeoutError:
                    reasons.append(f"{address[0]}:{address[1]}: " + (
                        f"answers did not verify ({rejected[-1]}; check ca.crt and the enrollment)"
                        if rejected else "no answer"))
                    continue
                if isinstance(result, LoginRefused):
                    if result.reason == "unavailable":
                        reasons.append(f"{address[0]}:{address[1]}: the AS cannot decide now (its log says why)")
                        continue
                    raise Fatal(f"the AS refused this node's certificate: {result.reason}")
                self.grant = result
                log.info("logged in as %s, vip4 %s, vip6 %s", result.fqdn, result.vip4, result.vip6)
                return result
            log.warning("login failed, retrying in %.0f s: %s", backoff, "; ".join(reasons) or "no AS address")
            await trio.sleep(backoff)
            backoff = min(backoff * 2, LOGIN_BACKOFF_MAX)

    # -- NMS requests ---------------------------------------------------------

    async def nms_request(self, type_: str, body: bytes, family: int | None = None) -> tuple[str, bytes]:
        """(reply type, opened reply body) of one authenticated NMS request."""
        g = self.grant
        families = [family] if family else list(self.nms)
        txid = secrets.randbits(32)
        last: Exception | None = None
        for fam in families:
            header = build(wire.NmsRequest, dict(header=dict(type=type_, txid=txid), ticket=g.ticket, sealed=b""))
            datagram = header + crypto.seal(g.session_key, body, header)

            def validate(data: bytes, source: Address, now: float, key=g.session_key):
                msg = parse(wire.NmsReply, data)
                plain = crypto.open_sealed(key, bytes(msg.sealed), data[: len(data) - len(msg.sealed)])
                return str(msg.header.type), plain

            try:
                return await self.transact(("txid", txid), datagram, self.nms[fam], validate)
            except TimeoutError as exc:
                last = exc
        raise last or TimeoutError("no NMS address")

    async def register(self, family: int) -> None:
        self._sequence = max(self._sequence + 1, time.time_ns())
        port = self.cfg["listen_port"]
        own = {str(self.grant.vip4), str(self.grant.vip6)}
        want = 6 if family == socket.AF_INET6 else 4
        locators = [
            locator(a, port) for a in self.local_addresses(own) if ipaddress.ip_address(a).version == want
        ][:16]
        body = build(wire.RegistrationBody, dict(sequence=self._sequence, locators=locators))
        kind, reply = await self.nms_request("RegistrationRequest", body, family)
        if kind != "RegistrationResponse":
            raise RouteError(f"registration answered with {kind}")
        ack = parse(wire.RegistrationAck, reply)
        name = "ipv6" if family == socket.AF_INET6 else "ipv4"
        first = name not in self.registered
        self.registered[name] = {"observed": "%s:%d" % locator_text(ack.observed), "nat": ack.nat, "refresh": ack.refresh}
        if first:
            log.info("registered over %s, seen as %s%s", name, self.registered[name]["observed"], " (behind NAT)" if ack.nat else "")

    async def register_all(self) -> None:
        for family in list(self.nms):
            try:
                await self.register(family)
            except (TimeoutError, RouteError, ParseError) as exc:
                self.registered.pop("ipv6" if family == socket.AF_INET6 else "ipv4", None)
                log.warning("registration failed: %s", exc)

    async def refresh_loop(self) -> None:
        """Refreshes keep the registration (and the NAT binding) alive; a
        ticket about to expire means a new login first."""
        while True:
            refresh = min((r["refresh"] for r in self.registered.values()), default=2)
            await trio.sleep(refresh)
            if self.grant.expires - time.time() < 300:
                await self.login()
            await self.register_all()
            self._forget_stale_paths(time.time())

    # -- route selection --------------------------------------------------------

    async def route_to(self, fqdn: str) -> core.PeerInfo:
        """Route selection (triggered by DNS) and tunnel establishment."""
        tunnel = self.packet.tunnel_to(fqdn)
        if tunnel is not None:
            return tunnel.peer
        if fqdn in self._routing:
            await self._routing[fqdn].wait()
            tunnel = self.packet.tunnel_to(fqdn)
            if tunnel is None:
                raise RouteError(f"no route to {fqdn}")
            return tunnel.peer
        done = self._routing[fqdn] = trio.Event()
        try:
            return await self._select_and_open(fqdn)
        finally:
            done.set()
            del self._routing[fqdn]

    async def _select_and_open(self, fqdn: str) -> core.PeerInfo:
        started = time.perf_counter()
        body = build(wire.DirectionRequestBody, dict(timestamp=int(time.time()), target=fqdn))
        kind, reply = await self.nms_request("DirectionRequest", body)
        if kind == "SignalingError" and str(parse(wire.SignalingErrorBody, reply).code) == "not_registered":
            await self.register_all()  # the NMS restarted: register, then ask again
            kind, reply = await self.nms_request("DirectionRequest", body)
        if kind == "SignalingError":
            err = parse(wire.SignalingErrorBody, reply)
            if str(err.code) == "unknown_peer":
                raise UnknownPeer(fqdn)
            raise RouteError(f"{fqdn}: {err.code} ({err.detail})")
        path = self._path(self._fresh_direction(reply, time.time()))
        self.route_ms.append((time.perf_counter() - started) * 1000)
        log.info("route selection %s: %s, path %08x", fqdn, path.process, path.path_id)
        opened = time.perf_counter()
        if path.initiator:
            await self._open_tunnel(path)
        else:
            event = self._established.setdefault(path.path_id, trio.Event())
            self._expected[path.path_id] = (path, time.time())
            self._release_early(path.path_id, time.time())
            with trio.move_on_after(5):
                await event.wait()
            self._established.pop(path.path_id, None)
            if self.packet.tunnel_to(fqdn) is None:
                raise RouteError(f"{fqdn} did not open the tunnel")
        self.tunnel_ms.append((time.perf_counter() - opened) * 1000)
        return path.peer

    def _fresh_direction(self, plain: bytes, now: float):
        body = parse(wire.RouteDirectionBody, plain)
        if abs(now - body.timestamp) > MAX_SKEW:
            raise AuthenticationError("stale route direction")
        return body

    def _path(self, body) -> core.Path:
        process, initiator = str(body.process), str(body.role) == "initiator"
        relay = None
        if process == "TunnelRequestToTRS":
            if len(self._links) >= MAX_LINKS:
                self._forget_links(time.time())
            if len(self._links) >= MAX_LINKS:
                raise RouteError("too many relayed paths held; refusing a new one")
            # the Tunnel Key (shared with the TRS) authenticates the relayed
            # frames; the hellos, and so the End Keys, use the Temp Key only
            relay = RelayLink(body.path_id, bytes(body.tunnel_key), responder=not initiator, sequence=time.time_ns())
            self._links[body.path_id] = (relay, time.time())
        return core.Path(
            path_id=body.path_id,
            process=str(body.process),
            initiator=str(body.role) == "initiator",
            peer=core.PeerInfo(
                body.peer_fqdn,
                ipaddress.IPv4Address(bytes(body.peer_vip4)),
                ipaddress.IPv6Address(bytes(body.peer_vip6)),
            ),
            peer_address=locator_text(body.peer_locator),
            tunnel_key=bytes(body.temporary_key) if relay else bytes(body.tunnel_key),
            relay=relay,
        )

    def _route_direction_to_cn(self, data: bytes, source: Address, now: float) -> None:
        """The NMS announces a route: expect (or open) a tunnel, then ack.
        Each direction is acted on once; a replay (from anywhere, at any
        time) creates nothing and draws no answer."""
        if self.grant is None:
            raise AuthenticationError("not logged in")
        msg = parse(wire.NmsReply, data)
        plain = crypto.open_sealed(self.grant.session_key, bytes(msg.sealed), data[: len(data) - len(msg.sealed)])
        body = parse(wire.RouteDirectionBody, plain)
        why = self._directions.refuse(body.path_id, body.timestamp, now)
        nms = self.nms.get(family_of(source[0]))
        if why == "replayed" and source == nms and self._reacks.get(body.path_id, REACKS) < REACKS:
            # the NMS retransmits when our ack was lost: ack again, a few times at most
            self._reacks[body.path_id] += 1
            self._ack(body.path_id, nms)
            return
        if why is not None:
            self.drops(f"{why} route direction", source)
            return
        try:
            path = self._path(body)
        except RouteError as exc:
            self.drops("route direction refused", source, str(exc))
            return
        log.info("route direction from NMS: %s with %s, path %08x", path.process, path.peer.fqdn, path.path_id)
        self._expected[path.path_id] = (path, now)
        self._reacks[path.path_id] = 0
        while len(self._reacks) > MAX_LINKS:
            del self._reacks[next(iter(self._reacks))]
        if path.initiator:
            self.nursery.start_soon(self._open_tunnel_logged, path)
        elif path.relay:
            self.nursery.start_soon(self._bind, path)
        # the ack goes to our NMS, never to whoever sent the datagram
        if nms is not None:
            self._ack(path.path_id, nms)

    def _ack(self, path_id: int, nms: Address) -> None:
        g = self.grant
        header = build(
            wire.NmsRequest,
            dict(header=dict(type="RouteDirectionAck", txid=secrets.randbits(32)), ticket=g.ticket, sealed=b""),
        )
        body = build(wire.AckBody, dict(timestamp=int(time.time()), path_id=path_id))
        self.sendto(header + crypto.seal(g.session_key, body, header), nms)
