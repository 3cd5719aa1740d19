"""Rekeying a tunnel: fresh End Keys from a new ephemeral X25519 agreement,
with no gap in traffic (protocols/tunnel.md#rekeying), sans I/O.

Like WireGuard's key rotation. Only the tunnel's original initiator starts
a rekey: when its keys are REKEY_AFTER seconds old or REKEY_AFTER_PACKETS
counters were used in either direction. It sends a Rekey Request (its next
receiver index, a fresh ephemeral) under the current End Key, again and
again until answered. The responder answers with its own index and
ephemeral, keeps the new keys as `next` (they open, they do not seal), and
goes on sealing under the current ones; a duplicate request gets the same
answer, never a second key set. The initiator seals under the new keys as
soon as it has the answer; the responder as soon as the first datagram
under them arrives. Both keep the keys they retired for opening what is
still in flight: GRACE seconds after the peer is seen using the new ones.

The data path calls these functions and does the I/O; `now` is passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cyphonic import crypto
from cyphonic.core.tunnel import SEND_LIMIT, Keys, Tunnel
from cyphonic.errors import AuthenticationError
from cyphonic.wire import tunnel as wire
from cyphonic.wire.common import build, parse

REKEY_AFTER = 120.0  # seconds; node.toml `rekey_after`
REKEY_AFTER_PACKETS = 2**32  # counters used under one key set, either direction
GRACE = 10.0  # retired keys still open this long after the peer used the new ones
RETRY = 1.0  # first retransmission of a Rekey Request; doubles ...
RETRY_MAX = 8.0  # ... up to this, until answered or the tunnel dies


@dataclass
class Pending:
    """The initiator's Rekey Request in flight."""

    index: int
    ephemeral: crypto.Ephemeral
    body: bytes  # sent again as is
    resend_at: float
    retry: float = RETRY


def due(tunnel: Tunnel, now: float, rekey_after: float = REKEY_AFTER, after_packets: int | None = None) -> bool:
    """Must the initiator start a rekey now? Not while one is in flight, nor
    before the peer was seen using the last keys (two rotations would
    otherwise overlap)."""
    if not tunnel.path.initiator or tunnel.rekey_pending is not None:
        return False
    if tunnel.previous is not None and tunnel.previous_until == math.inf:
        return False
    used = max(tunnel.send_counter, tunnel.replay.highest + 1)
    limit = min(REKEY_AFTER_PACKETS if after_packets is None else after_packets, SEND_LIMIT)
    return used >= limit or now - tunnel.established >= rekey_after


def start(tunnel: Tunnel, now: float, index: int) -> bytes:
    """The Rekey Request plaintext; `index` is the initiator's next receiver index."""
    ephemeral = crypto.Ephemeral()
    body = build(wire.RekeyRequestBody, dict(sender_index=index, ephemeral=ephemeral.public))
    tunnel.rekey_pending = Pending(index, ephemeral, body, now + RETRY)
    return body


def retransmission(tunnel: Tunnel, now: float) -> bytes | None:
    """The pending request again if its time came (backing off), else None."""
    pending = tunnel.rekey_pending
    if pending is None or now < pending.resend_at:
        return None
    pending.retry = min(pending.retry * 2, RETRY_MAX)
    pending.resend_at = now + pending.retry
    return pending.body


def accept_request(tunnel: Tunnel, body: bytes, now: float, index: int) -> bytes:
    """The responder's side: the Rekey Response plaintext for `body`, with
    `index` as its next receiver index. The new keys become `tunnel.next`;
    a duplicate of the last request gets the same response and no new keys."""
    if tunnel.path.initiator:
        raise AuthenticationError("rekey request from the tunnel's responder")
    answered = tunnel.rekey_answered
    if answered is not None and answered[0] == body:
        return answered[1]
    msg = parse(wire.RekeyRequestBody, body)
    ephemeral = crypto.Ephemeral()
    shared = ephemeral.agree(bytes(msg.ephemeral))
    transcript = _transcript(tunnel, msg.sender_index, index, bytes(msg.ephemeral), ephemeral.public)
    send, recv = crypto.end_keys(shared, tunnel.path.tunnel_key, transcript, initiator=False)
    cipher = crypto.DataCipher(send, recv, buffers=False, suite=tunnel.cipher.suite)  # a rekey keeps the suite
    tunnel.next = Keys(index, msg.sender_index, cipher)
    response = build(
        wire.RekeyResponseBody,
        dict(sender_index=index, receiver_index=msg.sender_index, ephemeral=ephemeral.public),
    )
    tunnel.rekey_answered = (body, response)
    return response


def accept_response(tunnel: Tunnel, body: bytes, now: float) -> bool:
    """The initiator's side: switch to the new keys (True), or False for a
    late duplicate of a response already used."""
    pending = tunnel.rekey_pending
    if pending is None:
        return False
    msg = parse(wire.RekeyResponseBody, body)
    if msg.receiver_index != pending.index:
        raise AuthenticationError("rekey response to another request")
    shared = pending.ephemeral.agree(bytes(msg.ephemeral))
    transcript = _transcript(tunnel, pending.index, msg.sender_index, pending.ephemeral.public, bytes(msg.ephemeral))
    send, recv = crypto.end_keys(shared, tunnel.path.tunnel_key, transcript, initiator=True)
    tunnel.rotate(
        Keys(pending.index, msg.sender_index, crypto.DataCipher(send, recv, buffers=False, suite=tunnel.cipher.suite)),
        now,
    )
    tunnel.previous_until = math.inf  # until the responder is seen using the new keys
    tunnel.rekey_pending = None
    return True


def promote(tunnel: Tunnel, now: float) -> None:
    """The responder's side: the first datagram under the next keys came,
    so the initiator uses them; seal under them from now on."""
    keys = tunnel.next
    assert keys is not None, "promote without next keys"  # the caller opened a datagram under them
    tunnel.rotate(keys, now)
    tunnel.next = None
    tunnel.previous_until = now + GRACE


def expire(tunnel: Tunnel, now: float) -> None:
    """Start the previous keys' grace once the peer uses the current ones
    (something opened under them), and forget them when it is over."""
    if tunnel.previous is None:
        return
    if tunnel.previous_until == math.inf:
        if tunnel.replay.highest >= 0:
            tunnel.previous_until = now + GRACE
    elif now >= tunnel.previous_until:
        tunnel.previous = None
        tunnel.previous_until = math.inf


def next_timer(tunnel: Tunnel, rekey_after: float = REKEY_AFTER) -> float:
    """When `due`, `retransmission` or `expire` next has something to do
    (inf: nothing timed; the packet trigger and the start of a grace are
    seen at the supervisor's regular tick)."""
    times = []
    if tunnel.rekey_pending is not None:
        times.append(tunnel.rekey_pending.resend_at)
    elif tunnel.path.initiator and (tunnel.previous is None or tunnel.previous_until != math.inf):
        times.append(tunnel.established + rekey_after)
    if tunnel.previous is not None:
        times.append(tunnel.previous_until)
    return min(times, default=math.inf)


def _transcript(tunnel: Tunnel, index_i: int, index_r: int, eph_i: bytes, eph_r: bytes) -> bytes:
    """Binds the new keys to the path, both new indices and both new
    ephemerals (the first handshake's transcript has no indices: the two
    can never be equal)."""
    return (
        tunnel.path.path_id.to_bytes(4, "big") + index_i.to_bytes(4, "big") + index_r.to_bytes(4, "big") + eph_i + eph_r
    )
