"""The Packet Handling Module's control traffic: every authenticated
capsule that is not data (Keep Alive and its Ack, Tunnel Update and its
Ack, the rekey messages), the rekey steps the supervisor drives (core.rekey), the tunnel
table's re-filing when keys rotate, and the probes that confirm a direct
path before a relayed tunnel leaves the TRS. A mixin of
PacketHandlingModule: none of it is on the per-packet data path."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from cyphonic.core import rekey
from cyphonic.core import tunnel as core
from cyphonic.core.replay import COUNTER_LIMIT
from cyphonic.crypto import PacketBuffer
from cyphonic.errors import AuthenticationError, ParseError
from cyphonic.wire import tunnel as wire
from cyphonic.wire.common import parse

if TYPE_CHECKING:
    from cyphonic.drops import Drops

log = logging.getLogger("cyphonic.packet")

Address = tuple[str, int]
REKEY_TYPES = (core.REKEY_REQUEST, core.REKEY_RESPONSE)
# Through the TRS these are sealed for it, not only MAC'd: they may move
# the sender's endpoint there (protocols/relay.md). Keep Alives among them:
# after a NAT rebinding or a move, the next one (a probe while data flows)
# moves this end's side of the session.
RELAY_SEALED = (core.KEEPALIVE, core.TUNNEL_UPDATE, *REKEY_TYPES)
TUNNEL_MESSAGES = (core.TUNNEL_UPDATE, core.TUNNEL_UPDATE_ACK)


class TunnelControl:
    # What this mixin uses from PacketHandlingModule. For the type checker
    # only: a definition here would shadow the real one.
    if TYPE_CHECKING:
        by_index: dict[int, core.Tunnel]
        _others: dict[int, core.Tunnel]
        _probes: list[tuple[core.Tunnel, Address]]
        drops: Drops
        on_tunnel_message: Callable[[core.Tunnel, int, bytes], None] | None

        def send(self, tunnel: core.Tunnel, type_: int, plaintext: bytes) -> None: ...
        def send_direct(
            self, tunnel: core.Tunnel, type_: int, plaintext: bytes, address: Address, ttl: int | None = None
        ) -> None: ...
        def send_many(
            self, tunnel: core.Tunnel, datagrams: list[bytes], inner_bytes: int, sealed: bool = False
        ) -> None: ...

    def _reindex(self, tunnel: core.Tunnel, before: list[int]) -> None:
        """The tunnel's keys rotated (or it gained or lost a key set): file
        it under its indices now, if it is still installed."""
        if self.by_index.get(before[0]) is not tunnel:
            return
        for index in before:
            if self.by_index.get(index) is tunnel:
                del self.by_index[index]
            if self._others.get(index) is tunnel:
                del self._others[index]
        self.by_index[tunnel.local_index] = tunnel
        for index in tunnel.indices()[1:]:
            self._others[index] = tunnel

    def _fresh_index(self) -> int:
        while True:
            index = core.new_index()
            if index not in self.by_index and index not in self._others:
                return index

    def _send_control(self, tunnel: core.Tunnel, type_: int, plaintext: bytes) -> None:
        """A Keep Alive (Ack), Tunnel Update or rekey message: no user
        bytes. Rekey messages may use the counters past SEND_LIMIT: they
        are what retires the keys."""
        rekeying = type_ in REKEY_TYPES
        try:
            datagram = tunnel.seal(type_, plaintext, COUNTER_LIMIT) if rekeying else tunnel.seal(type_, plaintext)
        except core.CounterExhausted:
            self._exhausted(tunnel)
            return
        self.send_many(tunnel, [datagram], 0, sealed=type_ in RELAY_SEALED)

    def _exhausted(self, tunnel: core.Tunnel) -> None:
        # never a counter twice under one key: drop; the initiator's next
        # supervisor tick starts a rekey (core.rekey.due), and the
        # responder's counter is the initiator's receive counter, so it
        # does the same for the responder's keys
        self.drops("send counter at its limit", tunnel.endpoint)

    def _open_other(
        self,
        tunnel: core.Tunnel,
        index: int,
        buf: PacketBuffer,
        start: int,
        length: int,
        source: Address,
        now: float,
        via_relay: bool,
    ) -> int | None:
        """A capsule under keys the tunnel retired or has not used yet; the
        first one under the responder's next keys makes them current."""
        plain = tunnel.open_other(index, buf, start, length, source, now, via_relay)
        if plain is not None and tunnel.next is not None and tunnel.next.local_index == index:
            before = tunnel.indices()
            rekey.promote(tunnel, now)
            self._reindex(tunnel, before)
            log.debug("tunnel with %s: new End Keys in use (rekey %d)", tunnel.peer.fqdn, tunnel.rekeys)
        return plain

    def _control(
        self, tunnel: core.Tunnel, type_: int, body: bytes, source: Address, now: float, via_relay: bool
    ) -> None:
        """Every authenticated capsule but data. Opening it already
        refreshed liveness and, if newest, moved the endpoint or made its
        source a direct candidate (core.Tunnel.open_at)."""
        try:
            if type_ == core.KEEPALIVE:
                if body:
                    parse(wire.Probe, body)
                if via_relay or source == tunnel.endpoint:
                    self.send(tunnel, core.KEEPALIVE_ACK, body)
                else:
                    # a probe of a direct path: answered the way it came
                    self.send_direct(tunnel, core.KEEPALIVE_ACK, body, source)
            elif type_ == core.KEEPALIVE_ACK:
                if body and tunnel.confirm(source, body):
                    log.info("tunnel with %s: direct path to %s:%s confirmed", tunnel.peer.fqdn, *source)
            elif type_ in TUNNEL_MESSAGES:
                if self.on_tunnel_message is not None:
                    self.on_tunnel_message(tunnel, type_, body)
            elif type_ == core.REKEY_REQUEST:
                before = tunnel.indices()
                response = rekey.accept_request(tunnel, body, now, self._fresh_index())
                self._reindex(tunnel, before)
                self._send_control(tunnel, core.REKEY_RESPONSE, response)
            elif type_ == core.REKEY_RESPONSE:
                before = tunnel.indices()
                if rekey.accept_response(tunnel, body, now):
                    self._reindex(tunnel, before)
                    log.debug("tunnel with %s: new End Keys (rekey %d)", tunnel.peer.fqdn, tunnel.rekeys)
                    # the responder seals under them from the first datagram under them on
                    self.send(tunnel, core.KEEPALIVE, b"")
        except ParseError as exc:
            self.drops("malformed tunnel message", source, str(exc).splitlines()[0])
        except AuthenticationError as exc:
            self.drops("refused tunnel message", source, exc.reason)

    def rekey_tick(self, tunnel: core.Tunnel, now: float, rekey_after: float) -> float:
        """The supervisor's rekey step: retire old keys, start a rekey or
        send the pending request again. Returns when it is next needed."""
        before = tunnel.indices()
        rekey.expire(tunnel, now)
        if rekey.due(tunnel, now, rekey_after):
            self._send_control(tunnel, core.REKEY_REQUEST, rekey.start(tunnel, now, self._fresh_index()))
        else:
            body = rekey.retransmission(tunnel, now)
            if body is not None:
                self._send_control(tunnel, core.REKEY_REQUEST, body)
        if tunnel.indices() != before:
            self._reindex(tunnel, before)
        return rekey.next_timer(tunnel, rekey_after)

    def _send_probes(self) -> None:
        """A Keep Alive with a challenge to each new direct candidate of a
        relayed tunnel: its Ack, echoing it from there, confirms the path."""
        probes = self._probes[:]
        self._probes.clear()
        for tunnel, address in probes:
            candidate = tunnel.candidates.get(address)
            if candidate is not None and tunnel.relayed and self.by_index.get(tunnel.local_index) is tunnel:
                self.send_direct(tunnel, core.KEEPALIVE, candidate.challenge, address)
