"""The Signaling Module's logic for one identity, sans I/O (seed:
"Authentication process", "Registration process", "Route selection
process", "Tunnel establishment process"), in the manner of aioquic:

    machine.receive(datagram, source, now)      a signaling datagram arrived
    machine.datagrams_to_send()                 Send / SendOnTunnel actions
    machine.next_timer(); machine.handle_timer(now)
    machine.next_event()                        LoggedIn, Registered, RouteSelected, ...

and commands from the driver: `login`, `register`, `route_to`, `moved`,
`tunnel_message`, `tunnel_closed`, `path_failed`. Time comes in as `now`; nothing here
touches a socket, a task or the clock, so one process can run a machine per
identity (the adapter: one per general node) and tests drive it step by step.

This module holds login, registration and refresh; route selection is in
`routes`, tunnel establishment and the path table in `paths`, hole punching
in `punching`, moves and failover in `mobility`.
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from collections.abc import Callable
from typing import Any

from cyphonic import crypto
from cyphonic.core import handshake
from cyphonic.core import tunnel as core
from cyphonic.core.login import Grant, LoginClient, LoginRefused
from cyphonic.core.signaling import events as ev
from cyphonic.core.signaling.mobility import Mobility
from cyphonic.core.signaling.paths import TunnelEstablishment
from cyphonic.core.signaling.punching import HolePunching
from cyphonic.core.signaling.routes import RouteSelection
from cyphonic.core.signaling.timers import Timers
from cyphonic.core.signaling.transactions import Transactions
from cyphonic.drops import Drops
from cyphonic.errors import AuthenticationError, ParseError
from cyphonic.wire import relay as relay_wire
from cyphonic.wire import signaling as wire
from cyphonic.wire import tunnel as tunnel_wire
from cyphonic.wire.common import TYPE, build, locator, locator_text, parse

log = logging.getLogger("cyphonic.signaling")

Address = tuple[str, int]
NMS_REPLIES = {TYPE[n] for n in ("RegistrationResponse", "RouteDirection", "SignalingError")}
LOGIN_REPLIES = {TYPE["LoginResponse"], TYPE["LoginReject"]}
LOGIN_BACKOFF_MAX = 30.0
RELOGIN_BEFORE = 300.0  # a ticket this close to its expiry means a new login first
REFRESH_UNREGISTERED = 2.0  # retry pace while no family is registered


def family_of(host: str) -> str:
    return "ipv6" if ":" in host else "ipv4"


class SignalingMachine(RouteSelection, TunnelEstablishment, HolePunching, Mobility):
    def __init__(
        self,
        identity: crypto.Identity,
        certificate: bytes,
        ca_public: bytes,
        *,
        auth: list[Address],
        nms: list[Address],
        families: set[str],
        port: int,
        now: float,
        hole_punching: bool = True,
        suites: int = handshake.DEFAULT_SUITES,
    ) -> None:
        self.identity = identity
        self.suites = suites  # the cipher suites our handshakes offer and accept
        self.certificate = certificate
        self.ca_public = ca_public
        self.port = port
        self.auth = [a for a in auth if family_of(a[0]) in families]
        # the first NMS address of each family we have a socket for
        self.nms = {family_of(a[0]): a for a in reversed(nms) if family_of(a[0]) in families}
        self.grant: Grant | None = None
        self.registered: dict[str, dict[str, Any]] = {}
        self.drops = Drops(log)
        self.transactions = Transactions()
        self.timers = Timers()
        self._events: deque[ev.Event] = deque()
        self._actions: list[ev.Send | ev.SendOnTunnel] = []
        self._sequence = int(now * 1e9)  # from the clock: a restarted node stays newer
        self._login_backoff = 1.0
        self._logging_in = False
        self._registering: set[str] = set()
        self._round = 0  # registration rounds: an abandoned one's answers are ignored
        self._refresh_armed = False
        RouteSelection.__init__(self)
        TunnelEstablishment.__init__(self)
        HolePunching.__init__(self, hole_punching)
        Mobility.__init__(self)

    @property
    def me(self) -> core.PeerInfo:
        g = self.grant
        # asked for by tunnel set-up and the resolver, both after LoggedIn
        assert g is not None, "no identity before login"
        return core.PeerInfo(g.fqdn, g.vip4, g.vip6)

    # -- the driver's interface -----------------------------------------------------

    def next_event(self) -> ev.Event | None:
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self) -> list[ev.Send | ev.SendOnTunnel]:
        out = [ev.Send(d, a) for d, a in self.transactions.outbox] + self._actions
        self.transactions.outbox.clear()
        self._actions = []
        return out

    def next_timer(self) -> float | None:
        times = [t for t in (self.transactions.next_timer(), self.timers.next_timer()) if t is not None]
        return min(times, default=None)

    def handle_timer(self, now: float) -> None:
        self.transactions.handle_timer(now)
        self.timers.run_due(now)

    def receive(self, data: bytes, source: Address, now: float) -> bytes | None:
        """Every non-data datagram for this identity. Bad ones are counted
        drops; nothing unauthenticated changes any state. Returns the data
        datagram a relayed frame carried, for the data plane (via the TRS)."""
        if not data:
            self.drops("empty datagram", source)
            return None
        kind = data[0]
        try:
            if kind in LOGIN_REPLIES or kind in NMS_REPLIES:
                self._reply(("txid", parse(wire.Header, data[:6]).txid), data, source, now)
            elif kind == TYPE["TunnelResponse"]:
                self._reply(("index", parse(tunnel_wire.TunnelResponse, data).receiver_index), data, source, now)
            elif kind == TYPE["RouteDirectionToCN"]:
                self._route_direction_to_cn(data, source, now)
            elif kind == TYPE["TunnelRequest"]:
                self._tunnel_request(data, source, now)
            elif kind == TYPE["Relayed"]:
                return self.relayed(data, source, now)
            else:
                self.drops("unexpected message type", source, hex(kind))
        except ParseError as exc:
            self.drops("malformed signaling", source, str(exc).splitlines()[0])
        except AuthenticationError as exc:
            self.drops("unauthenticated signaling", source, exc.reason)
        return None

    @property
    def registering(self) -> bool:
        """A registration is waiting for the NMS's answer."""
        return bool(self._registering)

    def claims(self, data: bytes) -> bool:
        """Is this signaling datagram for this identity? What a demultiplexer
        in front of sockets shared by several identities asks each of them:
        by transaction id, receiver index, path id or relay session, and for
        a Route Direction to CN by whether it opens under our session key."""
        try:
            kind = data[0]
            if kind in LOGIN_REPLIES or kind in NMS_REPLIES:
                return ("txid", parse(wire.Header, data[:6]).txid) in self.transactions
            if kind == TYPE["TunnelResponse"]:
                return ("index", parse(tunnel_wire.TunnelResponse, data).receiver_index) in self.transactions
            if kind == TYPE["TunnelRequest"]:
                return parse(tunnel_wire.TunnelRequest, data).path_id in self.paths
            if kind == TYPE["Relayed"]:
                return relay_wire.session_of(data) in self.links
            if kind == TYPE["RouteDirectionToCN"] and self.grant is not None:
                crypto.open_message(wire.NmsReply, data, self.grant.session_key)
                return True
        except (IndexError, ParseError, AuthenticationError):
            pass
        return False

    def _reply(self, key, data: bytes, source: Address, now: float) -> None:
        if not self.transactions.reply(key, data, source, now):
            self.drops("unsolicited reply", source)

    def _send(self, datagram: bytes, dest: Address) -> None:
        self._actions.append(ev.Send(datagram, dest))

    # -- authentication ----------------------------------------------------------------

    def login(self, now: float) -> None:
        """Log in at the first AS that grants it. Only a refusal signed by an
        AS of our CA ends it (LoginRefused); answers that do not verify are
        dropped, so a forger cannot stop us, and a round in which no AS
        decided is retried with backoff."""
        if not self._logging_in:
            self._logging_in = True
            self._login_at(list(self.auth), [], now)

    def _login_at(self, addresses: list[Address], reasons: list[str], now: float) -> None:
        if not addresses:
            log.warning(
                "login failed, retrying in %.0f s: %s", self._login_backoff, "; ".join(reasons) or "no AS address"
            )
            self.timers.at(now + self._login_backoff, lambda now: self._login_at(list(self.auth), [], now))
            self._login_backoff = min(self._login_backoff * 2, LOGIN_BACKOFF_MAX)
            return
        address, rest = addresses[0], addresses[1:]
        where = f"{address[0]}:{address[1]}"
        client = LoginClient(self.identity, self.certificate, self.ca_public, now)
        rejected: list[str] = []

        def accept(data: bytes, source: Address, now: float) -> Grant | LoginRefused:
            try:
                return client.accept(data, now)
            except LoginRefused as refused:
                return refused
            except AuthenticationError as exc:
                rejected.append(exc.reason)
                raise

        def done(result: Grant | LoginRefused, now: float) -> None:
            if isinstance(result, LoginRefused):
                if result.reason == "unavailable":
                    self._login_at(rest, reasons + [f"{where}: the AS cannot decide now (its log says why)"], now)
                    return
                self._logging_in = False
                self._events.append(ev.LoginRefused(result.reason))
                return
            self._logged_in(result, now)

        def failed(now: float) -> None:
            why = (
                f"answers did not verify ({rejected[-1]}; check ca.crt and the enrollment)" if rejected else "no answer"
            )
            self._login_at(rest, reasons + [f"{where}: {why}"], now)

        self.transactions.start(
            ("txid", client.txid), client.request, address, now, accept=accept, done=done, failed=failed
        )

    def _logged_in(self, grant: Grant, now: float) -> None:
        renewal = self.grant is not None
        self.grant, self._logging_in, self._login_backoff = grant, False, 1.0
        log.info("logged in as %s, vip4 %s, vip6 %s", grant.fqdn, grant.vip4, grant.vip6)
        self._events.append(ev.LoggedIn(grant))
        if renewal:  # a new ticket: register under it at once
            self._events.append(ev.RegistrationDue())

    # -- registration --------------------------------------------------------------------

    def register(self, now: float, addresses: list[str], restart: bool = False) -> None:
        """Register in every family we reach the NMS over; `addresses` are
        the host's own global addresses (the locators the NMS compares with
        the source it sees: NAT detection).

        One family after the other: the NMS orders all of a node's
        registrations by one sequence, and two sent at once over two
        sockets may arrive in either order (the later-numbered first would
        make the other stale)."""
        if self.addresses is None:
            self.addresses = list(addresses)  # where we start: `moved` compares with it
        if self._registering and not restart:
            return  # a round is under way; it covers every family
        # `restart`: the host moved; a round still waiting on the old
        # network's answers is abandoned (its answers change nothing)
        self._round += 1
        # only the families we hold an address in (when we know any): after a
        # move to a network without one, its registration would only wait out
        # its retransmissions while route selections wait for the round
        held = {family_of(a) for a in addresses}
        families = [f for f in self.nms if f in held] if held else list(self.nms)
        for family in set(self.registered) - set(families):
            del self.registered[family]
        self._registering = set(families)
        self._register_next(families, addresses, now)

    def _register_next(self, families: list[str], addresses: list[str], now: float) -> None:
        if families:
            self._register(families[0], families[1:], addresses, now)

    def _register(self, family: str, rest: list[str], addresses: list[str], now: float) -> None:
        round_ = self._round
        # one sequence for every family: the NMS orders a node's registrations by it
        self._sequence = max(self._sequence + 1, int(now * 1e9))
        # every family's locators: the NMS forgets an attachment in a family
        # the node no longer has an address in (it moved away from it)
        locators = [locator(a, self.port) for a in addresses][:16]
        body = build(wire.RegistrationBody, dict(sequence=self._sequence, locators=locators))

        def done(reply: tuple[str, bytes], now: float) -> None:
            if round_ != self._round:
                return
            self._registering.discard(family)
            kind, plain = reply
            if kind != "RegistrationResponse":
                self._registration_failed(family, f"registration answered with {kind}", now)
                self._register_next(rest, addresses, now)
                return
            ack = parse(wire.RegistrationAck, plain)
            first = family not in self.registered
            host, port = locator_text(ack.observed)
            observed = f"{host}:{port}"
            self.registered[family] = {"observed": observed, "nat": ack.nat, "refresh": ack.refresh}
            if first:
                log.info("registered over %s, seen as %s%s", family, observed, " (behind NAT)" if ack.nat else "")
            self._events.append(ev.Registered(family, observed, ack.nat, first))
            self._register_next(rest, addresses, now)
            self._arm_refresh(now)
            self.registration_settled(now)

        self.nms_request(
            "RegistrationRequest",
            body,
            now,
            family=family,
            done=done,
            failed=lambda now: self._next_after_failure(family, rest, addresses, now, round_),
        )

    def _next_after_failure(self, family: str, rest: list[str], addresses: list[str], now: float, round_: int) -> None:
        if round_ != self._round:
            return
        self._registration_failed(family, "no answer from the NMS", now)
        self._register_next(rest, addresses, now)

    def _registration_failed(self, family: str, reason: str, now: float) -> None:
        self._registering.discard(family)
        self.registered.pop(family, None)
        log.warning("registration over %s failed: %s", family, reason)
        self._events.append(ev.RegistrationFailed(family, reason))
        self._arm_refresh(now)
        self.registration_settled(now)

    def _arm_refresh(self, now: float) -> None:
        """Refreshes keep the registration (and the NAT binding) alive."""
        if self._refresh_armed or self._registering:
            return
        self._refresh_armed = True
        every = min((r["refresh"] for r in self.registered.values()), default=REFRESH_UNREGISTERED)
        self.timers.at(now + every, self._refresh)

    def _refresh(self, now: float) -> None:
        self._refresh_armed = False
        self.forget_stale_paths(now)
        if self.grant is not None and self.grant.expires - now < RELOGIN_BEFORE:
            self.login(now)  # LoggedIn is followed by RegistrationDue
            return
        self._events.append(ev.RegistrationDue())

    # -- NMS requests ----------------------------------------------------------------------

    def nms_request(
        self,
        type_: str,
        body: bytes,
        now: float,
        *,
        done: Callable[[tuple[str, bytes], float], None],
        failed: Callable[[float], None],
        family: str | None = None,
    ) -> None:
        """One authenticated NMS request: tried over each family's NMS in
        turn (the same transaction id), `done` with (reply type, opened body)."""
        g = self.grant
        # the driver registers and selects routes only after LoggedIn, and a grant is only ever replaced
        assert g is not None, "NMS request before login"
        # the families registered now first: after a move, the NMS address
        # of a family the new network lacks would only time out
        families = [family] if family else sorted(self.nms, key=lambda f: f not in self.registered)
        txid = secrets.randbits(32)
        fields = dict(header=dict(type=type_, txid=txid), ticket=g.ticket)
        datagram = crypto.seal_message(wire.NmsRequest, fields, g.session_key, body)
        key = g.session_key

        def accept(data: bytes, source: Address, now: float) -> tuple[str, bytes]:
            msg, plain = crypto.open_message(wire.NmsReply, data, key)
            return str(msg.header.type), plain

        def attempt(i: int, now: float) -> None:
            if i >= len(families):
                failed(now)
                return
            self.transactions.start(
                ("txid", txid),
                datagram,
                self.nms[families[i]],
                now,
                accept=accept,
                done=done,
                failed=lambda now: attempt(i + 1, now),
            )

        attempt(0, now)
