"""Signaling Module (seed): the Trio driver of one identity's Signaling
machine (`cyphonic.core.signaling`). It owns no protocol state: it feeds
the machine datagrams and the time, sends what the machine wants sent,
installs the tunnels it establishes in the Packet Handling Module (one
supervisor task each), and lets the resolver and the daemon wait for the
machine's events."""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Callable
from typing import Any

import trio

from cyphonic import crypto
from cyphonic.core import signaling as machine_events
from cyphonic.core import tunnel as core
from cyphonic.core.login import Grant
from cyphonic.core.signaling import SignalingMachine
from cyphonic.kernel.netlink import global_addresses
from cyphonic.node.errors import RouteError, UnknownPeer
from cyphonic.node.supervisor import supervise

log = logging.getLogger("cyphonic.signaling")

Address = tuple[str, int]
FAMILIES = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}


class Fatal(Exception):
    """The node cannot go on (e.g. the AS refused its certificate)."""


class SignalingModule:
    def __init__(
        self,
        cfg: dict,
        identity: crypto.Identity,
        certificate: bytes,
        ca_public: bytes,
        sockets,
        packet,
        *,
        local_addresses: Callable[[set[str]], list[str]] = global_addresses,
    ) -> None:
        self.cfg = cfg
        self.sockets: dict[int, socket.socket] = sockets
        self.packet = packet
        self.local_addresses = local_addresses
        self.machine = SignalingMachine(
            identity,
            certificate,
            ca_public,
            auth=cfg["auth"],
            nms=cfg["nms"],
            families={FAMILIES[f] for f in sockets},
            port=cfg["listen_port"],
            now=time.time(),
            hole_punching=cfg["hole_punching"],
            suites=crypto.suites_offered(cfg["cipher"]),
        )
        self.nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        self._armed: float | None = None  # when the timer task wakes next (None: no timer)
        self._waiters: dict[Any, list[trio.Event | Any]] = {}  # key -> [event, result]
        # told when the NMS has named a path, before the tunnel is up (the
        # adapter holds a general node's first packets for it meanwhile)
        self.on_directed: Callable[[core.PeerInfo], None] | None = None
        self._locators: list[str] | None = None  # what was last registered

    # what the daemon's status shows
    @property
    def grant(self) -> Grant | None:
        return self.machine.grant

    @property
    def me(self) -> core.PeerInfo:
        return self.machine.me

    @property
    def registered(self) -> dict:
        return self.machine.registered

    @property
    def drops(self):
        return self.machine.drops

    @property
    def route_ms(self):
        return self.machine.route_ms

    @property
    def tunnel_ms(self):
        return self.machine.tunnel_ms

    # -- feeding the machine ----------------------------------------------------------

    def receive(self, data: bytes, source: Address, now: float) -> None:
        """A signaling datagram for this identity (the demultiplexer decided)."""
        inner = self.machine.receive(data, source, now)
        if inner is not None:  # data the TRS relayed: the machine did nothing else
            self.packet.receive(inner, source, now, via_relay=True)
            return
        self.pump()

    def tunnel_message(self, tunnel: core.Tunnel, type_: int, body: bytes) -> None:
        """A Tunnel Update or its Ack, authenticated by the data plane."""
        self.machine.tunnel_message(tunnel, type_, body, time.time())
        self.pump()

    def pump(self, wake: bool = True) -> None:
        """Act on what the machine has to say, then wake the timer task (a
        call from outside it may have set an earlier timer)."""
        machine = self.machine
        while (event := machine.next_event()) is not None:
            self._event(event)
        for action in machine.datagrams_to_send():
            if isinstance(action, machine_events.Send):
                self.sendto(action.datagram, action.dest)
            elif action.to is None:
                self.packet.send(action.tunnel, action.type, action.body)
            else:
                self.packet.send_direct(action.tunnel, action.type, action.body, action.to, action.ttl)
        if wake and self._earlier(machine.next_timer()):
            self._wake.set()

    def sendto(self, data: bytes, dest: Address) -> None:
        sock = self.sockets.get(socket.AF_INET6 if ":" in dest[0] else socket.AF_INET)
        if sock is None:
            return
        try:
            sock.sendto(data, dest)
        except OSError as exc:
            self.drops("signaling send failed", dest, str(exc))

    def _event(self, event: machine_events.Event) -> None:
        if isinstance(event, machine_events.TunnelEstablished):
            self.packet.install(event.tunnel)
            # set by the owner (NodeDaemon.run) before any datagram can reach the machine
            assert self.nursery is not None, "the owner sets the nursery first"
            self.nursery.start_soon(
                supervise, event.tunnel, self.packet, self, self.cfg["keepalive"], self.cfg["rekey_after"]
            )
        elif isinstance(event, machine_events.RegistrationDue):
            now, addresses = time.time(), self._addresses()
            if not self.machine.moved(now, addresses) and addresses:
                self.machine.register(now, addresses)
        elif isinstance(event, (machine_events.LoggedIn, machine_events.LoginRefused)):
            self._resolve("login", event)
        elif isinstance(event, (machine_events.Registered, machine_events.RegistrationFailed)):
            if not self.machine.registering:
                self._resolve("registration", event)
        elif isinstance(event, machine_events.RouteDirected):
            if self.on_directed is not None:
                self.on_directed(event.peer)
            self._resolve(("directed", event.fqdn), event)
        elif isinstance(event, (machine_events.RouteSelected, machine_events.RouteFailed)):
            self._resolve(("directed", event.fqdn), event)
            resolved = self._resolve(("route", event.fqdn), event)
            if not resolved and isinstance(event, machine_events.RouteFailed):  # a re-route nobody waited for
                log.warning("route to %s not re-established: %s", event.fqdn, event.reason)

    def _resolve(self, key, value) -> bool:
        waiter = self._waiters.pop(key, None)
        if waiter is None:
            return False
        waiter[1] = value
        waiter[0].set()
        return True

    async def _wait(self, key) -> Any:
        waiter = self._waiters.get(key)
        if waiter is None:
            waiter = self._waiters[key] = [trio.Event(), None]
        await waiter[0].wait()
        return waiter[1]

    def _earlier(self, deadline: float | None) -> bool:
        """Does the timer task sleep past `deadline` (so it must be woken)?"""
        return deadline is not None and (self._armed is None or deadline < self._armed)

    async def run(self) -> None:
        """The machine's timers (retransmissions, refreshes, punches, expiry)."""
        while True:
            deadline = self._armed = self.machine.next_timer()  # wall-clock time, as every `now` the machine gets
            with trio.move_on_after(math.inf if deadline is None else max(0.0, deadline - time.time())):
                await self._wake.wait()
            self._wake = trio.Event()
            self.machine.handle_timer(time.time())
            self.pump(wake=False)  # the loop reads next_timer() again anyway

    # -- what the daemon and the resolver ask for ------------------------------------

    async def login(self) -> Grant:
        """Logged in (retrying with backoff), or Fatal on a signed refusal."""
        self.machine.login(time.time())
        self.pump()
        event = await self._wait("login")
        if isinstance(event, machine_events.LoginRefused):
            raise Fatal(f"the AS refused this node's certificate: {event.reason}")
        return event.grant

    async def register_all(self) -> None:
        """Register in every family, and wait until each has answered or failed."""
        assert self.grant is not None, "register_all before login"  # NodeDaemon.run logs in first
        addresses = self._addresses()
        self.machine.moved(time.time(), addresses)  # the first call: where we start
        self.machine.register(time.time(), addresses)
        self.pump()
        if self.machine.registering:
            await self._wait("registration")

    def _addresses(self) -> list[str]:
        """This host's locators now (never the overlay's own addresses)."""
        g = self.grant
        self._locators = list(self.local_addresses({str(g.vip4), str(g.vip6)} if g else set()))
        return self._locators

    def network_changed(self) -> bool:
        """The kernel changed an address, route or link (mobility): a
        changed set of locators is registered at once, not at the next
        refresh, and each tunnel follows (core.signaling.mobility).
        False if the locators did not change."""
        if self.grant is None or self._locators is None:
            return False
        before = self._locators
        if not self.machine.moved(time.time(), self._addresses()):
            return False
        log.info("locators now %s (were %s)", ", ".join(self._locators) or "none", ", ".join(before) or "none")
        self.pump()
        return True

    @property
    def offline(self) -> bool:
        return self.machine.offline

    def mobility(self) -> dict:
        return self.machine.mobility_status()

    async def route_to(self, fqdn: str, early: bool = False) -> core.PeerInfo:
        """Route selection (triggered by DNS) and tunnel establishment.
        `early`: return once the NMS has named the path, while the tunnel
        is still being established (the caller holds packets until then)."""
        tunnel = self.packet.tunnel_to(fqdn)
        if tunnel is not None:
            return tunnel.peer
        key = ("route", fqdn)
        first = key not in self._waiters
        if first:
            self._waiters[key] = [trio.Event(), None]
            if early:
                self._waiters[("directed", fqdn)] = [trio.Event(), None]
        # a later query joins the selection and waits for the whole of it;
        # held before the machine runs: it may fail at once (no uplink)
        waiter = self._waiters[("directed", fqdn) if early and first else key]
        if first:
            self.machine.route_to(fqdn, time.time())
            self.pump()
        await waiter[0].wait()
        event: Any = waiter[1]
        if isinstance(event, (machine_events.RouteSelected, machine_events.RouteDirected)):
            return event.peer
        if event.unknown:
            raise UnknownPeer(fqdn)
        raise RouteError(f"no route to {fqdn}: {event.reason}")

    # -- what the tunnels' supervisors report (node.supervisor.Owner) -----------------

    def tunnel_died(self, tunnel: core.Tunnel, carried_traffic: bool) -> None:
        self.machine.tunnel_closed(tunnel, carried_traffic, time.time())
        self.pump()

    def path_failed(self, tunnel: core.Tunnel) -> None:
        self.machine.path_failed(tunnel, time.time())
        self.pump()
