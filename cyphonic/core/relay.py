"""The Tunnel Relay Service's logic, sans I/O (protocols/relay.md).

A session exists only after the NMS asked for it with a Relay Request
sealed under the NMS–TRS key. Its two endpoints are learned from frames
sealed under the session's Tunnel Key, and only a frame whose sequence is
newer than every one seen from that side may move that side's endpoint.
Data frames must carry a valid MAC and come from the side's current
endpoint; they are forwarded unchanged. Nothing else is forwarded, and
nothing is kept for datagrams that fail: a flood costs counters only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from cyphonic import crypto
from cyphonic.core.freshness import MAX_SKEW, Freshness
from cyphonic.drops import Drops
from cyphonic.errors import AuthenticationError, ParseError
from cyphonic.wire import relay as wire
from cyphonic.wire.common import TYPE, build, locator, parse

log = logging.getLogger("cyphonic.trs")

Address = tuple[str, int]
Outgoing = list[tuple[bytes, Address]]

MAX_SESSIONS = 65536
SIDES = (0, wire.FROM_RESPONDER)


@dataclass
class Side:
    endpoint: Address | None = None
    sequence: int = -1
    packets: int = 0
    bytes: int = 0


@dataclass
class Session:
    session_id: int
    seal_key: bytes
    mac_key: bytes
    lifetime: float
    created: float
    last_seen: float
    sides: dict[int, Side] = field(default_factory=lambda: {s: Side() for s in SIDES})


MacRun = Callable[[crypto.PacketBuffer, int, int, int, bytes, bytes], int]


class RelayService:
    def __init__(self, nms_key: bytes, locators: list[Address], mac_run: MacRun = crypto.relay_mac_run) -> None:
        """`mac_run`: how `forward_run` checks a run of frames (crypto's, or
        the compiled one of cyphonic.fastpath)."""
        self.mac_run = mac_run
        self.nms_key = nms_key
        self.locators = locators
        self.sessions: dict[int, Session] = {}
        self.drops = Drops(log)
        self._requests = Freshness(MAX_SKEW)
        self._next_expiry: float | None = None  # no session expires before
        # what sessions that are gone carried, by side, and how many were
        # opened: with the live sessions' counters, totals that never go back
        self.retired = {s: Side() for s in SIDES}
        self.sessions_opened = 0

    # -- input ------------------------------------------------------------------

    def receive(self, data: bytes, source: Address, now: float) -> Outgoing:
        kind = data[0] if data else -1
        try:
            if kind == TYPE["Relayed"]:
                return self._relayed(data, source, now)
            if kind == TYPE["RelayRequest"]:
                return self._relay_request(data, source, now)
        except ParseError as exc:
            self.drops("malformed datagram", source, str(exc).splitlines()[0])
            return []
        except AuthenticationError as exc:
            self.drops("unauthenticated datagram", source, exc.reason)
            return []
        self.drops("unexpected message type", source)
        return []

    def _relay_request(self, data: bytes, source: Address, now: float) -> Outgoing:
        msg, plain = crypto.open_message(wire.RelayRequest, data, self.nms_key)
        body = parse(wire.RelayRequestBody, plain)
        seal_key, mac_key = crypto.relay_keys(bytes(body.tunnel_key))
        session = self.sessions.get(body.session_id)
        why = self._requests.refuse((msg.header.txid, body.session_id), body.timestamp, now)
        if why == "replayed":
            # the NMS retransmits when our answer was lost: answer again, but
            # a replay never recreates an expired session
            if body.session_id and (session is None or session.seal_key != seal_key):
                self.drops("replayed relay request", source)
                return []
            accepted = True
        elif why is not None:
            self.drops(f"{why} relay request", source)
            return []
        elif (
            not body.session_id or session is not None and session.seal_key == seal_key
        ):  # session 0 is the NMS's health probe: answered, never kept
            accepted = True
        else:
            accepted = session is not None or len(self.sessions) < MAX_SESSIONS
            if accepted:
                # a new session, or the NMS reusing an id with a new Tunnel Key:
                # the key it sends now is the one both ends hold
                if session is not None:
                    self._retire(session)
                self.sessions_opened += 1
                self.sessions[body.session_id] = Session(
                    body.session_id, seal_key, mac_key, float(body.lifetime), now, now
                )
                self._next_expiry = min(self._next_expiry or float("inf"), now + body.lifetime)
                log.info(
                    "relay session %08x %s for the NMS at %s:%s",
                    body.session_id,
                    "re-keyed" if session is not None else "opened",
                    *source,
                )
        reply = build(
            wire.RelayResponseBody,
            dict(
                session_id=body.session_id,
                accepted=accepted,
                locators=[locator(*a) for a in self.locators],
            ),
        )
        header = dict(header=dict(type="RelayResponse", txid=msg.header.txid))
        return [(crypto.seal_message(wire.RelayResponse, header, self.nms_key, reply), source)]

    def _relayed(self, data: bytes, source: Address, now: float) -> Outgoing:
        if len(data) < wire.RELAYED_HEADER + wire.RELAY_TAG:
            raise ParseError("relayed frame too short")
        _, session_id, flags = wire.RELAYED_HEAD.unpack_from(data)
        session = self.sessions.get(session_id)
        if session is None:
            self.drops("frame for an unknown session", source)
            return []
        side_id = flags & wire.FROM_RESPONDER
        side = session.sides[side_id]
        if flags & wire.SEALED:
            sequence = _open_sealed_frame(session.seal_key, data).sequence
            if sequence <= side.sequence:
                if source != side.endpoint:  # a replay from elsewhere moves nothing
                    self.drops("stale sealed frame", source)
                    return []
            else:
                side.sequence = sequence
            if side.endpoint != source:
                log.info("relay session %08x: side %d at %s:%s", session_id, side_id, *source)
                side.endpoint = source
        else:
            if source != side.endpoint:
                self.drops("frame from a non-endpoint address", source)
                return []
            if not crypto.relay_mac_ok(session.mac_key, data[: -wire.RELAY_TAG], data[-wire.RELAY_TAG :]):
                raise AuthenticationError("bad relay MAC")
        other = session.sides[side_id ^ wire.FROM_RESPONDER]
        session.last_seen = now
        side.packets += 1
        side.bytes += len(data)
        if other.endpoint is None:
            self.drops("other end not yet known", source)
            return []
        return [(data, other.endpoint)]

    def forward_at(self, buf: crypto.PacketBuffer, start: int, end: int, source: Address, now: float) -> Address | None:
        """The batch path's `receive` for a data frame (MAC only) lying in
        buf[start:end]: where it goes unchanged, or None (dropped, counted).
        The same checks as `_relayed`, with the MAC checked in place. Sealed
        frames and every other message go through `receive`."""
        length = end - start
        if length < wire.RELAYED_HEADER + wire.RELAY_TAG:
            self.drops("malformed datagram", source, "relayed frame too short")
            return None
        _, session_id, flags = wire.RELAYED_HEAD.unpack_from(buf.data, start)
        session = self.sessions.get(session_id)
        if session is None:
            self.drops("frame for an unknown session", source)
            return None
        side_id = flags & wire.FROM_RESPONDER
        side = session.sides[side_id]
        if source != side.endpoint:
            self.drops("frame from a non-endpoint address", source)
            return None
        if not crypto.relay_mac_ok_at(session.mac_key, buf, start, length - wire.RELAY_TAG):
            self.drops("unauthenticated datagram", source, "bad relay MAC")
            return None
        other = session.sides[side_id ^ wire.FROM_RESPONDER]
        session.last_seen = now
        side.packets += 1
        side.bytes += length
        if other.endpoint is None:
            self.drops("other end not yet known", source)
            return None
        return other.endpoint

    def forward_run(
        self, buf: crypto.PacketBuffer, start: int, n: int, size: int, source: Address, now: float
    ) -> tuple[int, Address | None]:
        """`forward_at` for a run of a GRO batch: the data frames from
        buf[start] on (`size` bytes each but the last) of the first one's
        session side, up to the first that is not or whose MAC fails. Returns
        (their end, where they go); (start, None) when the first frame is not
        such a frame, for the caller to hand to `forward_at` (which counts
        the drop or forwards it alone)."""
        if min(size, n - start) < wire.RELAYED_HEADER + wire.RELAY_TAG:
            return start, None
        _, session_id, flags = wire.RELAYED_HEAD.unpack_from(buf.data, start)
        session = self.sessions.get(session_id)
        if session is None or flags & wire.SEALED:
            return start, None
        side_id = flags & wire.FROM_RESPONDER
        side, other = session.sides[side_id], session.sides[side_id ^ wire.FROM_RESPONDER]
        if source != side.endpoint or other.endpoint is None:
            return start, None
        head = bytes(buf.data[start : start + wire.RELAYED_HEADER])
        end = self.mac_run(buf, start, n, size, head, session.mac_key)
        if end > start:
            session.last_seen = now
            side.packets += -(-(end - start) // size)
            side.bytes += end - start
        return end, other.endpoint

    # -- time ---------------------------------------------------------------------

    def next_timer(self) -> float | None:
        """When a session may have expired (never later than the first does)."""
        return self._next_expiry

    def handle_timer(self, now: float) -> Outgoing:
        """Forget sessions silent for longer than their lifetime."""
        next_expiry = None
        for session_id, s in list(self.sessions.items()):
            deadline = s.last_seen + s.lifetime
            if now >= deadline:  # due at exactly the deadline next_timer gave
                self._retire(self.sessions.pop(session_id))
                log.info("relay session %08x expired", session_id)
            elif next_expiry is None or deadline < next_expiry:
                next_expiry = deadline
        # traffic only moves deadlines later, so this bound stays early enough
        self._next_expiry = next_expiry
        return []

    def _retire(self, session: Session) -> None:
        for side_id, side in session.sides.items():
            self.retired[side_id].packets += side.packets
            self.retired[side_id].bytes += side.bytes

    def relayed(self) -> dict[int, Side]:
        """Frames and bytes received from each side, since start."""
        totals = {s: Side(packets=r.packets, bytes=r.bytes) for s, r in self.retired.items()}
        for session in self.sessions.values():
            for side_id, side in session.sides.items():
                totals[side_id].packets += side.packets
                totals[side_id].bytes += side.bytes
        return totals

    def status(self, now: float) -> list[dict]:
        return [
            {
                "session": f"{s.session_id:08x}",
                "age": round(now - s.created, 1),
                "idle": round(now - s.last_seen, 1),
                "sides": {
                    ("responder" if k else "initiator"): {
                        "endpoint": f"{v.endpoint[0]}:{v.endpoint[1]}" if v.endpoint else None,
                        "packets": v.packets,
                        "bytes": v.bytes,
                    }
                    for k, v in s.sides.items()
                },
            }
            for s in self.sessions.values()
        ]


class RelayLink:
    """A node's end of one relay session: wraps its datagrams for the TRS
    and unwraps (verifies) the peer's frames that the TRS forwards."""

    def __init__(self, session_id: int, tunnel_key: bytes, responder: bool, sequence: int) -> None:
        self.session_id = session_id
        self.seal_key, self.mac_key = crypto.relay_keys(tunnel_key)
        self.flags = wire.FROM_RESPONDER if responder else 0
        self.sequence = sequence  # start from the clock: restarts stay newer
        # the head of every data frame we send, packed once
        self.head = wire.RELAYED_HEAD.pack(TYPE["Relayed"], session_id, self.flags)

    def wrap(self, datagram: bytes, sealed: bool = False) -> bytes:
        if sealed:
            self.sequence += 1
            fields = dict(type="Relayed", session_id=self.session_id, flags=self.flags | wire.SEALED)
            inner = build(wire.SealedInner, dict(sequence=self.sequence, datagram=datagram))
            return crypto.seal_message(wire.Relayed, fields, self.seal_key, inner)
        head = self.head + datagram
        return head + crypto.relay_mac(self.mac_key, head)

    def unwrap(self, frame: bytes) -> bytes:
        """The peer's datagram inside a forwarded frame (AuthenticationError
        for anything the peer did not send on this session)."""
        if len(frame) < wire.RELAYED_HEADER + wire.RELAY_TAG:
            raise AuthenticationError("not a frame of this relay session")
        _, session_id, flags = wire.RELAYED_HEAD.unpack_from(frame)
        if session_id != self.session_id:
            raise AuthenticationError("not a frame of this relay session")
        if flags & wire.FROM_RESPONDER == self.flags:
            raise AuthenticationError("a frame from our own side")
        if flags & wire.SEALED:
            return bytes(_open_sealed_frame(self.seal_key, frame).datagram)
        if not crypto.relay_mac_ok(self.mac_key, frame[: -wire.RELAY_TAG], frame[-wire.RELAY_TAG :]):
            raise AuthenticationError("bad relay MAC")
        return frame[wire.RELAYED_HEADER : -wire.RELAY_TAG]


def _open_sealed_frame(seal_key: bytes, frame: bytes):
    """The SealedInner of a sealed Relayed frame (AuthenticationError,
    ParseError). Sealed frames are rare (handshakes, binds, updates): the
    schemas are worth their cost here, unlike on the data frames."""
    _, inner = crypto.open_message(wire.Relayed, frame, seal_key)
    return parse(wire.SealedInner, inner)
