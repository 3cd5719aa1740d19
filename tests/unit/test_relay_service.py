"""The TRS's relay logic and a node's relay link, driven step by step."""

from __future__ import annotations

import os
import secrets
from collections import Counter
import struct

import pytest

from cyphonic import crypto
from cyphonic.core.relay import RelayLink, RelayService
from cyphonic.errors import AuthenticationError
from cyphonic.wire import relay as wire
from cyphonic.wire.common import build, parse

NOW = 1_800_000_000.0
NMS = ("203.0.113.10", 7001)
MN = ("198.51.100.10", 4500)
CN = ("192.0.2.10", 31000)
EVIL = ("203.0.113.66", 666)


def relay_request(nms_key: bytes, session_id: int, tunnel_key: bytes, lifetime: int = 60, txid: int = 7, at: float = NOW) -> bytes:
    header = build(wire.RelayRequest, dict(header=dict(type="RelayRequest", txid=txid), sealed=b""))
    body = build(wire.RelayRequestBody, dict(timestamp=int(at), session_id=session_id, tunnel_key=tunnel_key, lifetime=lifetime))
    return header + crypto.seal(nms_key, body, header)


@pytest.fixture
def setup():
    nms_key, tunnel_key = crypto.random_key(), crypto.random_key()
    trs = RelayService(nms_key, [("203.0.113.20", 7002)])
    [(reply, dest)] = trs.receive(relay_request(nms_key, 0xC0FFEE, tunnel_key), NMS, NOW)
    msg = parse(wire.RelayResponse, reply)
    body = parse(wire.RelayResponseBody, crypto.open_sealed(nms_key, bytes(msg.sealed), reply[:6]))
    assert dest == NMS and body.accepted and body.session_id == 0xC0FFEE
    mn = RelayLink(0xC0FFEE, tunnel_key, responder=False, sequence=1000)
    cn = RelayLink(0xC0FFEE, tunnel_key, responder=True, sequence=5000)
    return trs, mn, cn, nms_key


def bind(trs, mn, cn):
    assert trs.receive(cn.wrap(b"hello from cn", sealed=True), CN, NOW) == []  # other side unknown yet
    [(frame, dest)] = trs.receive(mn.wrap(b"tunnel request", sealed=True), MN, NOW)
    assert dest == CN and cn.unwrap(frame) == b"tunnel request"


def test_a_session_exists_only_after_the_nms_asked_for_it(setup):
    trs, mn, cn, _ = setup
    stranger = RelayService(crypto.random_key(), [])
    assert stranger.receive(mn.wrap(b"x", sealed=True), MN, NOW) == []
    assert stranger.drops.counts["frame for an unknown session"] == 1
    forged = relay_request(crypto.random_key(), 1, crypto.random_key())
    assert trs.receive(forged, EVIL, NOW) == [] and 1 not in trs.sessions


def test_frames_are_forwarded_between_the_two_learned_endpoints(setup):
    trs, mn, cn, _ = setup
    bind(trs, mn, cn)
    [(frame, dest)] = trs.receive(cn.wrap(b"capsule"), CN, NOW)
    assert dest == MN and mn.unwrap(frame) == b"capsule"
    [(frame, dest)] = trs.receive(mn.wrap(b"capsule 2"), MN, NOW)
    assert dest == CN and cn.unwrap(frame) == b"capsule 2"


def test_nothing_is_forwarded_from_elsewhere_or_without_the_key(setup):
    trs, mn, cn, _ = setup
    bind(trs, mn, cn)
    assert trs.receive(mn.wrap(b"data"), EVIL, NOW) == []  # genuine frame, wrong address
    forged = bytearray(mn.wrap(b"data"))
    forged[8] ^= 1
    assert trs.receive(bytes(forged), MN, NOW) == []
    outsider = RelayLink(0xC0FFEE, crypto.random_key(), responder=False, sequence=10**9)
    assert trs.receive(outsider.wrap(b"move me", sealed=True), EVIL, NOW) == []
    assert trs.sessions[0xC0FFEE].sides[0].endpoint == MN
    assert trs.drops.counts["frame from a non-endpoint address"] == 1
    assert trs.drops.counts["unauthenticated datagram"] == 2


def test_a_replayed_sealed_frame_never_moves_an_endpoint(setup):
    trs, mn, cn, _ = setup
    old = mn.wrap(b"tunnel request", sealed=True)
    trs.receive(cn.wrap(b"hello", sealed=True), CN, NOW)
    trs.receive(old, MN, NOW)
    trs.receive(mn.wrap(b"update", sealed=True), MN, NOW + 1)
    assert trs.receive(old, EVIL, NOW + 2) == []
    assert trs.sessions[0xC0FFEE].sides[0].endpoint == MN
    # a genuinely newer frame from a new address moves it (mobility)
    trs.receive(mn.wrap(b"moved", sealed=True), ("198.51.100.99", 4500), NOW + 3)
    assert trs.sessions[0xC0FFEE].sides[0].endpoint == ("198.51.100.99", 4500)


def test_idle_sessions_expire(setup):
    trs, mn, cn, _ = setup
    bind(trs, mn, cn)
    assert trs.next_timer() == NOW + 60  # the session's lifetime after its last frame
    assert trs.handle_timer(NOW + 59) == []
    assert 0xC0FFEE in trs.sessions
    assert trs.handle_timer(NOW + 61) == []
    assert trs.sessions == {}
    assert trs.receive(mn.wrap(b"late"), MN, NOW + 62) == []


def test_a_flood_of_junk_creates_no_state(setup):
    trs, mn, cn, _ = setup
    for _ in range(2000):
        junk = bytes([0x42]) + secrets.token_bytes(4) + os.urandom(60)
        trs.receive(junk, (f"10.{secrets.randbelow(255)}.0.1", 1), NOW)
        trs.receive(os.urandom(80), EVIL, NOW)
    assert list(trs.sessions) == [0xC0FFEE]
    assert trs.sessions[0xC0FFEE].sides[0].endpoint is None
    assert trs.drops.total() == 4000


def test_the_trs_cannot_open_relayed_data(setup):
    trs, mn, cn, _ = setup
    bind(trs, mn, cn)
    end_key = crypto.random_key()  # agreed by MN and CN; the TRS never sees it
    header = struct.pack("<BIQ", 0x30, 1, 0)
    capsule = crypto.DataCipher(end_key, end_key).seal(header, b"secret payload")
    [(frame, _)] = trs.receive(mn.wrap(capsule), MN, NOW)
    session = trs.sessions[0xC0FFEE]
    for key in (session.seal_key, session.mac_key):
        with pytest.raises(AuthenticationError):
            crypto.DataCipher(key, key).open(frame[wire.RELAYED_HEADER : -wire.RELAY_TAG], 13)
    assert b"secret payload" not in frame


# --- Relay Requests under replay (hardening issue, finding 7) ------------------------


def test_a_replayed_relay_request_never_recreates_an_expired_session(setup):
    trs, mn, cn, nms_key = setup
    request = relay_request(nms_key, 0xBEEF, crypto.random_key(), lifetime=30, txid=99)
    [(first, _)] = trs.receive(request, NMS, NOW)
    # the NMS retransmits (our answer was lost): the same session, answered again
    [(again, _)] = trs.receive(request, NMS, NOW + 0.3)
    assert len(trs.sessions) == 2
    trs.handle_timer(NOW + 100)
    assert 0xBEEF not in trs.sessions
    assert trs.receive(request, EVIL, NOW + 100) == []
    assert 0xBEEF not in trs.sessions and trs.drops.counts["replayed relay request"] == 1
    # and past the freshness window it is stale
    assert trs.receive(request, EVIL, NOW + 1000) == []
    assert trs.drops.counts["stale relay request"] == 1


def test_a_relay_request_for_an_existing_session_with_a_new_key_replaces_its_keys(setup):
    trs, mn, cn, nms_key = setup
    bind(trs, mn, cn)
    new_key = crypto.random_key()
    [(reply, _)] = trs.receive(relay_request(nms_key, 0xC0FFEE, new_key, txid=8), NMS, NOW + 1)
    msg = parse(wire.RelayResponse, reply)
    assert parse(wire.RelayResponseBody, crypto.open_sealed(nms_key, bytes(msg.sealed), reply[:6])).accepted
    mn2 = RelayLink(0xC0FFEE, new_key, responder=False, sequence=1)
    cn2 = RelayLink(0xC0FFEE, new_key, responder=True, sequence=1)
    assert trs.receive(cn2.wrap(b"bind", sealed=True), CN, NOW + 1) == []
    [(frame, dest)] = trs.receive(mn2.wrap(b"under the new key", sealed=True), MN, NOW + 1)
    assert dest == CN and cn2.unwrap(frame) == b"under the new key"
    # frames under the old key no longer pass
    assert trs.receive(mn.wrap(b"old"), MN, NOW + 1) == []


def test_the_batch_path_decides_every_data_frame_as_receive_does(setup):
    trs, mn, cn, _ = setup
    bind(trs, mn, cn)
    twin = RelayService(trs.nms_key, [])  # the same sessions, driven through `receive`
    twin.sessions = {k: type(v)(**{**v.__dict__, "sides": {s: type(x)(**x.__dict__) for s, x in v.sides.items()}})
                     for k, v in trs.sessions.items()}
    good = mn.wrap(os.urandom(200))
    bad_mac = good[:-1] + bytes([good[-1] ^ 1])
    stranger = RelayLink(0xBEEF, crypto.random_key(), responder=False, sequence=1).wrap(os.urandom(50))
    cases = [(good, MN), (good, EVIL), (bad_mac, MN), (stranger, MN), (good[:10], MN), (cn.wrap(b"y" * 40), CN)]
    before = Counter(trs.drops.counts)
    for frame, source in cases:
        buf = crypto.PacketBuffer(data=bytearray(b"\0" * 7 + frame + b"\0" * 5))  # where it lies in a batch
        dest = trs.forward_at(buf, 7, 7 + len(frame), source, NOW)
        expected = twin.receive(frame, source, NOW)
        assert ([(frame, dest)] if dest is not None else []) == expected, (frame[:8], source)
    assert Counter(trs.drops.counts) - before == Counter(twin.drops.counts)
    assert {s: (x.packets, x.bytes) for s, x in trs.sessions[0xC0FFEE].sides.items()} == {
        s: (x.packets, x.bytes) for s, x in twin.sessions[0xC0FFEE].sides.items()
    }
