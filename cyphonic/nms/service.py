"""The NMS's logic, sans I/O (seed: "Registration process", "Route selection
process").

Every request carries the node's ticket, so the NMS authenticates it with
no session table: after a restart it knows every key again at the first
refresh. The registry of locators is soft state, rebuilt by refreshes.
Route selection sends the Route Direction to CN first and answers the MN
only when CN has acknowledged, so the MN's Tunnel Request never reaches a
CN that does not yet expect it.
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cyphonic import crypto
from cyphonic.core.budget import Budgets
from cyphonic.core.freshness import MAX_SKEW, Freshness
from cyphonic.core.route import FAMILIES, route_selection
from cyphonic.drops import Drops
from cyphonic.errors import AuthenticationError, CyphonicError, ParseError
from cyphonic.nms.registry import Registration, Registry
from cyphonic.nms.relays import PendingRelay, RelayAssignment
from cyphonic.wire import signaling as wire
from cyphonic.wire.common import TYPE, build, locator, parse

log = logging.getLogger("cyphonic.nms")

Address = tuple[str, int]
Outgoing = list[tuple[bytes, Address]]

REQUESTS = {TYPE[n] for n in ("RegistrationRequest", "DirectionRequest", "RouteDirectionAck")}
RETRY = 0.25
ATTEMPTS = 6
REPLY_CACHE = 4096
# Route selections a node may ask for per second (each may cost a TRS
# session and state on the CN): steady rate, burst.
ROUTE_SELECTIONS = (10.0, 20.0)


@dataclass
class PendingRoute:
    """A route selection waiting for CN's acknowledgement."""

    path_id: int
    reply_to: Address
    mn_reply: bytes
    to_cn: bytes
    cn_address: Address
    attempts: int
    next_try: float
    mn_txid: tuple[str, int]
    mn_session_key: bytes
    cn_fqdn: str
    trs: Address | None = None  # the relay of a relayed path
    path: str = "relay"  # for the metrics: "direct", "reverse" or "relay"


class NodeManagementService:
    def __init__(
        self,
        nms_key: bytes,
        refresh: int = 10,
        trs: Sequence[Address] = (),
        trs_key: bytes | None = None,
        revoked: Callable[[], frozenset[int]] = frozenset,
    ) -> None:
        self.nms_key = nms_key
        self.refresh = refresh
        self.revoked = revoked
        self.relays = RelayAssignment(list(trs), trs_key) if trs and trs_key else None
        self.pending: dict[int, PendingRoute] = {}
        self.drops = Drops(log)
        self.locations = Registry(refresh, revoked, self.drops)
        self.registry = self.locations.nodes  # by FQDN
        self.route_selections = 0
        # for the metrics: registrations by result ("accepted", "refused"),
        # route selections by path ("direct", "reverse", "relay") or error code
        self.registrations: Counter[str] = Counter()
        self.route_results: Counter[str] = Counter()
        self._replies: OrderedDict[tuple[str, int], tuple[bytes, float, Address]] = OrderedDict()
        self._directions = Freshness(MAX_SKEW)
        self._route_budget = Budgets(*ROUTE_SELECTIONS)

    # -- input ----------------------------------------------------------------

    def receive(self, data: bytes, source: Address, now: float) -> Outgoing:
        if data and data[0] == TYPE["RelayResponse"] and self.relays is not None:
            return self._relay_response(data, source, now)
        if not data or data[0] not in REQUESTS:
            self.drops("unexpected message type", source)
            return []
        ticket = None

        def session_key(msg) -> bytes:  # the request's own ticket holds it
            nonlocal ticket
            ticket = parse(wire.Ticket, crypto.open_sealed(self.nms_key, bytes(msg.ticket)))
            if ticket.expires < now:
                raise AuthenticationError("expired ticket")
            return bytes(ticket.session_key)

        try:
            msg, body = crypto.open_message(wire.NmsRequest, data, session_key)
        except ParseError as exc:
            self.drops("malformed request", source, str(exc).splitlines()[0])
            return []
        except AuthenticationError as exc:
            self.drops("unauthenticated request", source, exc.reason)
            return []
        assert ticket is not None  # open_message asked session_key for the key, which parsed it
        try:
            if ticket.serial in self.revoked():
                self.locations.forget(ticket.fqdn, ticket.serial)
                self.drops("revoked certificate", source, ticket.fqdn)
                return []
        except CyphonicError as exc:
            self.drops("revocation list unreadable: refusing every request", source, str(exc))
            return []
        key = (ticket.fqdn, msg.header.txid)
        if key in self._replies:
            reply, _, dest = self._replies[key]
            if dest != source:  # a replay from elsewhere: never reflect it
                self.drops("replayed request from another address", source, ticket.fqdn)
                return []
            return [(reply, source)]  # a retransmission: the same answer
        kind = str(msg.header.type)
        try:
            if kind == "RegistrationRequest":
                return self._register(ticket, msg.header.txid, body, source, now)
            if kind == "DirectionRequest":
                return self._direction(ticket, msg.header.txid, body, source, now)
            return self._ack(ticket, body, source, now)
        except ParseError as exc:
            self.drops("malformed body", source, str(exc).splitlines()[0])
            return []

    def _register(self, ticket, txid: int, body: bytes, source: Address, now: float) -> Outgoing:
        nat = self.locations.register(ticket, parse(wire.RegistrationBody, body), source, now)
        self.registrations["refused" if nat is None else "accepted"] += 1
        if nat is None:
            return []
        ack = build(wire.RegistrationAck, dict(observed=locator(*source), nat=nat, refresh=self.refresh))
        return [self._reply("RegistrationResponse", txid, ticket, ack, source, now)]

    def _direction(self, ticket, txid: int, body: bytes, source: Address, now: float) -> Outgoing:
        request = parse(wire.DirectionRequestBody, body)
        why = self._directions.refuse((ticket.fqdn, txid), request.timestamp, now)
        if why == "replayed":
            return []  # a retransmission of a request in progress (or a replay): it is being answered
        if why is not None:
            self.drops(f"{why} direction request", source, ticket.fqdn)
            return []
        mn = self.locations.live(ticket.fqdn, now)
        if mn is None:
            return [self._error(txid, ticket, "not_registered", "register first", source, now)]
        if not self._route_budget.take(ticket.fqdn, now):
            self.drops("route selections over the per-node rate", source, ticket.fqdn)
            return [self._error(txid, ticket, "rate_limited", "too many route selections", source, now)]
        target = request.target
        cn = self.locations.live(target, now)
        if cn is None:
            return [self._error(txid, ticket, "unknown_peer", target, source, now)]
        if self._selecting(cn.fqdn, mn.fqdn):
            # both ends lost the path at once and both ask: one path for the
            # pair, or each end could settle on a different tunnel
            return [self._error(txid, ticket, "in_progress", "the peer is selecting a route to you", source, now)]
        route = route_selection(mn.endpoints, cn.endpoints)
        self.route_selections += 1
        path_id = secrets.randbits(32)
        key = crypto.random_key()
        if route.process == "TunnelRequestToTRS":
            if self.relays is None:
                log.info("route %s -> %s needs a TRS; none is configured", mn.fqdn, cn.fqdn)
                return [
                    self._error(
                        txid, ticket, "unreachable", "both ends behind NAPT or no common address family", source, now
                    )
                ]
            waiting = self.relays.waiting_for(mn.fqdn, cn.fqdn)
            if waiting is not None:
                # one TRS session per pair at a time: the answer goes to the newest request
                waiting.txid, waiting.reply_to, waiting.mn_key = txid, source, bytes(ticket.session_key)
                return []
            pending = PendingRelay(
                path_id, mn.fqdn, cn.fqdn, txid, source, bytes(ticket.session_key), key, crypto.random_key()
            )
            log.info("route selection %s -> %s: via TRS (path %08x)", mn.fqdn, cn.fqdn, path_id)
            return self.relays.ask(pending, now)
        assert route.family is not None  # only a relayed route has no common family
        mn_initiates = route.process == "TunnelRequestToCN"
        to_mn = self._direction_body(now, route.process, mn_initiates, path_id, cn, route.mn_sees, key)
        to_cn = self._direction_body(now, route.process, not mn_initiates, path_id, mn, route.cn_sees, key)
        return self._announce(
            path_id,
            mn,
            cn,
            txid,
            source,
            bytes(ticket.session_key),
            to_mn,
            to_cn,
            cn.endpoints.by_family[route.family].observed,
            now,
            f"{route.process} over {route.family}",
            path="direct" if mn_initiates else "reverse",
        )

    def _selecting(self, mn_fqdn: str, cn_fqdn: str) -> bool:
        """Is `mn_fqdn`'s route selection to `cn_fqdn` under way?"""
        if self.relays is not None and self.relays.waiting_for(mn_fqdn, cn_fqdn) is not None:
            return True
        return any(p.mn_txid[0] == mn_fqdn and p.cn_fqdn == cn_fqdn for p in self.pending.values())

    def _announce(
        self, path_id, mn, cn, txid, reply_to, mn_key, to_mn, to_cn, cn_address, now, what, trs=None, path="relay"
    ) -> Outgoing:
        """Route Direction to CN now; to MN once CN has acknowledged."""
        cn_txid = secrets.randbits(32)
        cn_msg = _sealed_reply("RouteDirectionToCN", cn_txid, cn.session_key, to_cn)
        mn_msg = _sealed_reply("RouteDirection", txid, mn_key, to_mn)
        self.pending[path_id] = PendingRoute(
            path_id,
            reply_to,
            mn_msg,
            cn_msg,
            cn_address,
            1,
            now + RETRY,
            (mn.fqdn, txid),
            mn_key,
            cn.fqdn,
            trs,
            path,
        )
        log.info("route selection %s -> %s: %s (path %08x)", mn.fqdn, cn.fqdn, what, path_id)
        return [(cn_msg, cn_address)]

    def _relay_response(self, data: bytes, source: Address, now: float) -> Outgoing:
        """The TRS accepted (or refused) a session: announce the relayed route."""
        relays = self.relays
        assert relays is not None  # receive() hands Relay Responses over only when a TRS is configured
        try:
            pending, locators = relays.answer(data, source, now)
        except (ParseError, AuthenticationError) as exc:
            self.drops("bad relay response", source, str(exc).splitlines()[0])
            return []
        if pending is None:
            return []
        if locators is None:  # refused: the next TRS
            return relays.ask(pending, now)
        mn, cn = self.locations.live(pending.mn_fqdn, now), self.locations.live(pending.cn_fqdn, now)
        mn_trs, cn_trs = (_trs_for(node, locators) for node in (mn, cn)) if mn and cn else (None, None)
        if mn is None or cn is None or mn_trs is None or cn_trs is None:
            return [
                (
                    self._sealed_error(
                        pending.txid, pending.mn_key, "unreachable", "no TRS address for a node's family"
                    ),
                    pending.reply_to,
                )
            ]
        to_mn = self._direction_body(
            now, "TunnelRequestToTRS", True, pending.path_id, cn, mn_trs[1], pending.tunnel_key, pending.temp_key
        )
        to_cn = self._direction_body(
            now, "TunnelRequestToTRS", False, pending.path_id, mn, cn_trs[1], pending.tunnel_key, pending.temp_key
        )
        return self._announce(
            pending.path_id,
            mn,
            cn,
            pending.txid,
            pending.reply_to,
            pending.mn_key,
            to_mn,
            to_cn,
            cn.endpoints.by_family[cn_trs[0]].observed,
            now,
            f"via TRS {source[0]}:{source[1]}",
            trs=source,
        )

    def _ack(self, ticket, body: bytes, source: Address, now: float) -> Outgoing:
        ack = parse(wire.AckBody, body)
        if abs(now - ack.timestamp) > MAX_SKEW:
            self.drops("stale acknowledgement", source, ticket.fqdn)
            return []
        path_id = ack.path_id
        pending = self.pending.get(path_id)
        if pending is None:
            return []  # a duplicate ack
        if pending.cn_fqdn != ticket.fqdn:
            self.drops("acknowledgement from another node than the path's CN", None, ticket.fqdn)
            return []
        del self.pending[path_id]
        self.route_results[pending.path] += 1
        if pending.trs is not None and self.relays is not None:
            self.relays.carried(pending.mn_txid[0], pending.cn_fqdn, pending.trs)
        self._remember(pending.mn_txid, pending.mn_reply, now, pending.reply_to)
        return [(pending.mn_reply, pending.reply_to)]

    # -- time -----------------------------------------------------------------

    def next_timer(self) -> float | None:
        relay = self.relays.next_timer() if self.relays is not None else None
        return min([p.next_try for p in self.pending.values()] + ([relay] if relay is not None else []), default=None)

    def handle_timer(self, now: float) -> Outgoing:
        out: Outgoing = []
        if self.relays is not None:
            out += self.relays.probes(now)
            resend, failed = self.relays.expired(now)
            out += resend
            for pending in failed:
                out += self.relays.ask(pending, now) or [
                    (
                        self._sealed_error(pending.txid, pending.mn_key, "unreachable", "no TRS answers"),
                        pending.reply_to,
                    )
                ]
        for path_id, p in list(self.pending.items()):
            if p.next_try > now:
                continue
            if p.attempts >= ATTEMPTS:
                del self.pending[path_id]
                log.warning("route selection path %08x: CN never acknowledged", path_id)
                fqdn, txid = p.mn_txid
                err = self._sealed_error(txid, p.mn_session_key, "unreachable", "peer does not answer")
                out.append((err, p.reply_to))
                continue
            p.attempts += 1
            p.next_try = now + min(RETRY * (2 ** (p.attempts - 1)), 1.0)  # within the MN's own wait
            out.append((p.to_cn, p.cn_address))
        for key, (_, at, _) in list(self._replies.items()):
            if now - at < 30:
                break
            del self._replies[key]
        return out

    # -- helpers --------------------------------------------------------------

    def _direction_body(
        self, now, process, initiator, path_id, peer: Registration, peer_address, key, temp=bytes(32)
    ) -> bytes:
        return build(
            wire.RouteDirectionBody,
            dict(
                timestamp=int(now),
                process=process,
                role="initiator" if initiator else "responder",
                path_id=path_id,
                peer_fqdn=peer.fqdn,
                peer_vip4=peer.vip4,
                peer_vip6=peer.vip6,
                peer_locator=locator(*peer_address),
                tunnel_key=key,
                temporary_key=temp,
            ),
        )

    def _reply(self, type_: str, txid: int, ticket, body: bytes, dest: Address, now: float) -> tuple[bytes, Address]:
        msg = _sealed_reply(type_, txid, bytes(ticket.session_key), body)
        self._remember((ticket.fqdn, txid), msg, now, dest)
        return msg, dest

    def _sealed_error(self, txid: int, session_key: bytes, code: str, detail: str) -> bytes:
        detail = detail.encode()[:200].decode(errors="ignore")
        self.route_results[code] += 1  # every error the NMS answers ends a route selection
        body = build(wire.SignalingErrorBody, dict(code=code, detail=detail))
        return _sealed_reply("SignalingError", txid, session_key, body)

    def _error(self, txid, ticket, code: str, detail: str, dest: Address, now: float) -> tuple[bytes, Address]:
        msg = self._sealed_error(txid, bytes(ticket.session_key), code, detail)
        self._remember((ticket.fqdn, txid), msg, now, dest)  # a retransmission gets it again
        return msg, dest

    def _remember(self, key: tuple[str, int], msg: bytes, now: float, dest: Address) -> None:
        self._replies[key] = (msg, now, dest)
        while len(self._replies) > REPLY_CACHE:
            self._replies.popitem(last=False)

    def status(self, now: float) -> list[dict]:
        return self.locations.status(now)


def _sealed_reply(type_: str, txid: int, session_key: bytes, body: bytes) -> bytes:
    """An NmsReply: `body` sealed under the receiving node's session key."""
    return crypto.seal_message(wire.NmsReply, dict(header=dict(type=type_, txid=txid)), session_key, body)


def _trs_for(node: Registration, locators: dict[str, Address]) -> tuple[str, Address] | None:
    """(family, TRS address) a node reaches the TRS over: a family it is registered in."""
    for family in FAMILIES:
        if family in node.endpoints.by_family and family in locators:
            return family, locators[family]
    return None
