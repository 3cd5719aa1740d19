"""Tunnel establishment (seed: "Tunnel establishment process"), sans I/O:
the Tunnel Request / Response handshake that makes a core.tunnel.Tunnel.

The initiator sends a Tunnel Request whose hello (FQDN, virtual IPs, an
ephemeral X25519 key, a timestamp, the cipher suites it offers) is sealed
under the key the NMS gave both ends; the responder answers with its own
hello and the suite it chose. Both derive the End Keys from the ephemeral
agreement, so recording the MN–CN key later does not open recorded data
(forward secrecy), and bind the suites into them (no downgrade).
"""

from __future__ import annotations

from cyphonic import crypto
from cyphonic.core.tunnel import Path, PeerInfo, Tunnel, new_index
from cyphonic.errors import AuthenticationError
from cyphonic.wire import tunnel as wire
from cyphonic.wire.common import build, parse

# A hello older than this is refused: it bounds how long a recorded Tunnel
# Request can be replayed to make the responder do work.
HELLO_MAX_AGE = 120.0

# What a handshake offers and accepts unless told otherwise: every suite
# this CPU runs (crypto.suites_offered("auto")).
DEFAULT_SUITES = crypto.suites_offered("auto")


def _hello(me: PeerInfo, ephemeral: crypto.Ephemeral, now: float, suites: int) -> bytes:
    return build(
        wire.TunnelHello,
        dict(
            fqdn=me.fqdn,
            vip4=me.vip4.packed,
            vip6=me.vip6.packed,
            ephemeral=ephemeral.public,
            timestamp=int(now),
            suites=suites,
        ),
    )


def _open_hello(path: Path, schema, datagram: bytes, now: float):
    """The handshake message and the peer's hello in it, checked against
    what the NMS announced."""
    msg, plain = crypto.open_message(schema, datagram, path.tunnel_key)
    hello = parse(wire.TunnelHello, plain)
    if (
        hello.fqdn != path.peer.fqdn
        or bytes(hello.vip4) != path.peer.vip4.packed
        or bytes(hello.vip6) != path.peer.vip6.packed
    ):
        raise AuthenticationError("hello names another node than the NMS announced")
    if abs(now - hello.timestamp) > HELLO_MAX_AGE:
        raise AuthenticationError("stale tunnel hello")
    return msg, hello


class Initiator:
    """The opener's half of the handshake for one Path; `suites`: the
    cipher suites it offers (crypto.SUITE_BITS)."""

    def __init__(self, path: Path, me: PeerInfo, now: float, suites: int = DEFAULT_SUITES) -> None:
        self.path = path
        self.local_index = new_index()
        self.suites = suites
        self._ephemeral = crypto.Ephemeral()
        fields = dict(type="TunnelRequest", path_id=path.path_id, sender_index=self.local_index)
        self.request = crypto.seal_message(
            wire.TunnelRequest, fields, path.tunnel_key, _hello(me, self._ephemeral, now, suites)
        )

    def accept_response(self, datagram: bytes, source: tuple[str, int], now: float) -> Tunnel:
        msg = parse(wire.TunnelResponse, datagram)
        if msg.path_id != self.path.path_id or msg.receiver_index != self.local_index:
            raise AuthenticationError("response for another handshake")
        _, hello = _open_hello(self.path, wire.TunnelResponse, datagram, now)
        chosen = crypto.SUITES.get(hello.suites)
        if chosen is None or not hello.suites & self.suites:
            raise AuthenticationError("the responder chose a cipher suite we did not offer")
        shared = self._ephemeral.agree(bytes(hello.ephemeral))
        transcript = _transcript(
            self.path.path_id, self._ephemeral.public, bytes(hello.ephemeral), self.suites, hello.suites
        )
        send, recv = crypto.end_keys(shared, self.path.tunnel_key, transcript, initiator=True)
        return Tunnel(
            path=self.path,
            local_index=self.local_index,
            remote_index=msg.sender_index,
            endpoint=source,
            cipher=crypto.DataCipher(send, recv, suite=chosen),
            established=now,
            last_received=now,
        )


def respond(
    path: Path,
    me: PeerInfo,
    datagram: bytes,
    source: tuple[str, int],
    now: float,
    suites: int = DEFAULT_SUITES,
) -> tuple[Tunnel, bytes]:
    """Answer a Tunnel Request on an announced path: the new Tunnel and the
    Tunnel Response to send back to `source`. The cipher suite is the best
    one both the request offers and `suites` allows."""
    msg = parse(wire.TunnelRequest, datagram)
    if msg.path_id != path.path_id:
        raise AuthenticationError("request for another path")
    _, hello = _open_hello(path, wire.TunnelRequest, datagram, now)
    chosen = crypto.choose_suite(hello.suites, suites)
    choice = crypto.SUITE_BITS[chosen]
    ephemeral = crypto.Ephemeral()
    shared = ephemeral.agree(bytes(hello.ephemeral))
    transcript = _transcript(path.path_id, bytes(hello.ephemeral), ephemeral.public, hello.suites, choice)
    send, recv = crypto.end_keys(shared, path.tunnel_key, transcript, initiator=False)
    local_index = new_index()
    fields = dict(
        type="TunnelResponse", path_id=path.path_id, sender_index=local_index, receiver_index=msg.sender_index
    )
    response = crypto.seal_message(wire.TunnelResponse, fields, path.tunnel_key, _hello(me, ephemeral, now, choice))
    tunnel = Tunnel(
        path=path,
        local_index=local_index,
        remote_index=msg.sender_index,
        endpoint=source,
        cipher=crypto.DataCipher(send, recv, suite=chosen),
        established=now,
        last_received=now,
    )
    return tunnel, response


def _transcript(path_id: int, initiator_eph: bytes, responder_eph: bytes, offered: int, chosen: int) -> bytes:
    # the offer and the choice are in it: a hello altered to force a weaker
    # suite (it cannot be: the hellos are sealed) would give other End Keys
    return path_id.to_bytes(4, "big") + initiator_eph + responder_eph + bytes([offered, chosen])
