"""Rekeying (core.rekey) with `now` passed in: when, the key agreement, the
grace of the retired keys, and the counter limits."""

from __future__ import annotations

import ipaddress
import math
import socket

import pytest

from cyphonic import crypto
from cyphonic.core import rekey
from cyphonic.core import handshake
from cyphonic.core import tunnel as core
from cyphonic.core.replay import COUNTER_LIMIT
from cyphonic.errors import AuthenticationError, ParseError
from cyphonic.node.packet import PacketHandlingModule
from cyphonic.wire import tunnel as wire
from cyphonic.wire.common import build
from tests.support.sockets import RecordingSocket

T0 = 1_800_000_000.0
MN = core.PeerInfo("mn.cyphonic.test", ipaddress.IPv4Address("10.96.0.2"), ipaddress.IPv6Address("fd7c:1f00::2"))
CN = core.PeerInfo("cn.cyphonic.test", ipaddress.IPv4Address("10.96.0.3"), ipaddress.IPv6Address("fd7c:1f00::3"))
MN_ADDR, CN_ADDR = ("192.0.2.10", 4500), ("198.51.100.20", 4500)


def pair() -> tuple[core.Tunnel, core.Tunnel]:
    """(initiator MN, responder CN) from a real handshake at T0."""
    key = crypto.random_key()
    init = handshake.Initiator(core.Path(7, "TunnelRequestToCN", True, CN, CN_ADDR, key), MN, T0)
    path = core.Path(7, "TunnelRequestToCN", False, MN, MN_ADDR, key)
    responder, response = handshake.respond(path, CN, init.request, MN_ADDR, T0)
    return init.accept_response(response, CN_ADDR, T0), responder


def rekeyed(now: float = T0 + 200) -> tuple[core.Tunnel, core.Tunnel, core.Keys]:
    """A pair after request and response: the initiator switched, the
    responder holds the new keys as `next`. Also returns the old keys."""
    i, r = pair()
    old = core.Keys(i.local_index, i.remote_index, i.cipher)
    request = rekey.start(i, now, 0x1111)
    response = rekey.accept_request(r, request, now, 0x2222)
    assert rekey.accept_response(i, response, now)
    return i, r, old


def key_bytes(cipher: crypto.DataCipher) -> tuple[bytes, bytes]:
    return bytes(crypto.ffi.buffer(cipher._send_key)), bytes(crypto.ffi.buffer(cipher._recv_key))


# -- when ---------------------------------------------------------------------------------


def test_the_initiator_rekeys_after_rekey_after_seconds_and_the_responder_never_starts():
    i, r = pair()
    assert not rekey.due(i, T0 + 119, rekey_after=120)
    assert rekey.due(i, T0 + 120, rekey_after=120)
    assert not rekey.due(r, T0 + 10_000, rekey_after=120)
    assert rekey.next_timer(i, 120) == T0 + 120
    assert rekey.next_timer(r, 120) == math.inf


def test_the_initiator_rekeys_after_a_packet_count_in_either_direction():
    i, _ = pair()
    assert not rekey.due(i, T0 + 1, after_packets=1000)
    i.send_counter = 1000
    assert rekey.due(i, T0 + 1, after_packets=1000)
    i, _ = pair()
    i.replay.update(998)  # the responder has sealed 999 under these keys
    assert not rekey.due(i, T0 + 1, after_packets=1000)
    i.replay.update(999)
    assert rekey.due(i, T0 + 1, after_packets=1000)


def test_the_default_packet_limit_is_read_when_deciding(monkeypatch):
    i, _ = pair()
    i.send_counter = 50
    assert not rekey.due(i, T0 + 1)
    monkeypatch.setattr(rekey, "REKEY_AFTER_PACKETS", 50)
    assert rekey.due(i, T0 + 1)


def test_a_pending_request_is_sent_again_with_backoff_until_answered():
    i, _ = pair()
    body = rekey.start(i, T0 + 120, 0x1111)
    assert not rekey.due(i, T0 + 120.5)  # one at a time
    assert rekey.retransmission(i, T0 + 120.9) is None
    sent = [t for t in (T0 + 121 + k * 0.25 for k in range(200)) if rekey.retransmission(i, t) == body]
    gaps = [b - a for a, b in zip(sent, sent[1:])]
    assert sent[0] == T0 + 121 and gaps[:3] == [2, 4, 8] and set(gaps[3:]) == {8}
    assert rekey.next_timer(i, 120) == sent[-1] + 8


def test_no_new_rekey_before_the_responder_used_the_last_keys():
    i, r, _ = rekeyed(T0 + 120)
    assert not rekey.due(i, T0 + 400, rekey_after=120)  # previous keys not yet confirmed
    assert rekey.next_timer(i, 120) == math.inf
    i.replay.update(0)  # the responder's first datagram under the new keys
    rekey.expire(i, T0 + 401)
    assert i.previous_until == T0 + 401 + rekey.GRACE
    assert rekey.due(i, T0 + 401, rekey_after=120)


# -- the key agreement --------------------------------------------------------------------


def test_both_ends_derive_the_same_new_keys_different_from_the_old():
    i, r, old = rekeyed()
    assert r.next is not None and r.next.local_index == 0x2222 and r.next.remote_index == 0x1111
    assert (i.local_index, i.remote_index) == (0x1111, 0x2222)
    i_send, i_recv = key_bytes(i.cipher)
    r_send, r_recv = key_bytes(r.next.cipher)
    assert i_send == r_recv and i_recv == r_send and i_send != i_recv
    assert {i_send, i_recv}.isdisjoint(key_bytes(old.cipher))
    assert i.send_counter == 0 and i.rekeys == 1 and i.established == T0 + 200


def test_the_new_keys_bind_the_path_key():
    i, r = pair()
    r.path = core.Path(7, "TunnelRequestToCN", False, MN, MN_ADDR, crypto.random_key())
    response = rekey.accept_request(r, rekey.start(i, T0 + 200, 1), T0 + 200, 2)
    rekey.accept_response(i, response, T0 + 200)
    assert key_bytes(i.cipher)[0] != key_bytes(r.next.cipher)[1]


def test_a_duplicate_request_gets_the_same_response_and_no_second_key_set():
    i, r = pair()
    request = rekey.start(i, T0 + 120, 0x1111)
    response = rekey.accept_request(r, request, T0 + 120, 0x2222)
    nxt = r.next
    assert rekey.accept_request(r, request, T0 + 121, 0x3333) == response
    assert r.next is nxt and r.next.local_index == 0x2222
    assert rekey.accept_response(i, response, T0 + 121)
    assert not rekey.accept_response(i, response, T0 + 122)  # a late duplicate changes nothing
    assert i.rekeys == 1


def test_only_the_initiator_may_ask_and_only_its_own_request_is_answered():
    i, r = pair()
    with pytest.raises(AuthenticationError):
        rekey.accept_request(i, rekey.start(i, T0, 1), T0, 2)
    i, r = pair()
    rekey.start(i, T0, 1)
    other = build(wire.RekeyResponseBody, dict(sender_index=5, receiver_index=99, ephemeral=crypto.Ephemeral().public))
    with pytest.raises(AuthenticationError):
        rekey.accept_response(i, other, T0)
    with pytest.raises(ParseError):
        rekey.accept_request(r, b"\x00" * 5, T0, 2)
    zero = build(wire.RekeyRequestBody, dict(sender_index=1, ephemeral=bytes(32)))
    with pytest.raises(AuthenticationError):  # an all-zero agreement is refused
        rekey.accept_request(r, zero, T0, 2)


def test_no_gap_the_responder_switches_on_the_first_datagram_under_the_new_keys():
    i, r, _ = rekeyed()
    now = T0 + 200
    # in flight from the responder under the old keys, opened by the initiator's previous
    from_r_old = r.seal(core.CAPSULE, b"old keys")
    assert i.open(from_r_old, CN_ADDR, now) == b"old keys"
    # the initiator's first datagram under the new keys: the responder promotes
    first = i.seal(core.KEEPALIVE, b"")
    assert r.open(first, MN_ADDR, now) == b""
    rekey.promote(r, now)
    assert (r.local_index, r.remote_index, r.next, r.rekeys) == (0x2222, 0x1111, None, 1)
    assert r.previous_until == now + rekey.GRACE
    assert i.open(r.seal(core.CAPSULE, b"new keys"), CN_ADDR, now) == b"new keys"
    assert r.endpoint == MN_ADDR and i.endpoint == CN_ADDR  # nothing moved


def test_retired_keys_open_in_flight_packets_during_the_grace_and_not_after():
    i, r = pair()
    now = T0 + 200
    # sealed under the old keys, still in flight when the keys rotate
    late_r = [r.seal(core.CAPSULE, b"late r%d" % k) for k in range(3)]
    late_i = [i.seal(core.CAPSULE, b"late i%d" % k) for k in range(3)]
    rekey.accept_response(i, rekey.accept_request(r, rekey.start(i, now, 1), now, 2), now)
    r.open(i.seal(core.KEEPALIVE, b""), MN_ADDR, now)
    rekey.promote(r, now)
    i.open(r.seal(core.KEEPALIVE_ACK, b""), CN_ADDR, now)
    rekey.expire(i, now + 1)  # the responder uses the new keys: the initiator's grace starts
    assert i.previous is not None and i.previous_until == now + 1 + rekey.GRACE
    assert i.open(late_r[0], CN_ADDR, now + 5) == b"late r0"
    assert r.open(late_i[0], MN_ADDR, now + 5) == b"late i0"
    assert i.open(late_r[0], CN_ADDR, now + 5) is None  # replays are refused under old keys too
    rekey.expire(i, now + 1 + rekey.GRACE)
    rekey.expire(r, now + rekey.GRACE)
    assert i.previous is None and r.previous is None
    assert i.indices() == [i.local_index] and r.indices() == [r.local_index]
    with pytest.raises(AuthenticationError):
        i.open(late_r[1], CN_ADDR, now + 12)
    with pytest.raises(AuthenticationError):
        r.open(late_i[1], MN_ADDR, now + 12)


def test_rekeying_keeps_endpoint_path_addresses_and_counters():
    i, r = pair()
    i.tx_bytes, i.rx_bytes, i.tx_packets = 1234, 5678, 9
    before = (i.endpoint, i.path, i.peer, i.tx_bytes, i.rx_bytes, i.tx_packets)
    rekey.accept_response(i, rekey.accept_request(r, rekey.start(i, T0 + 1, 1), T0 + 1, 2), T0 + 1)
    assert (i.endpoint, i.path, i.peer, i.tx_bytes, i.rx_bytes, i.tx_packets) == before


# -- counter limits -------------------------------------------------------------------------


def test_a_send_counter_at_the_limit_never_seals_again_but_rekey_messages_still_can():
    i, r = pair()
    i.send_counter = core.SEND_LIMIT
    with pytest.raises(core.CounterExhausted):
        i.seal(core.CAPSULE, b"data")
    assert i.send_counter == core.SEND_LIMIT
    assert rekey.due(i, T0 + 1)  # forced, long before rekey_after
    i.seal(core.REKEY_REQUEST, b"x", COUNTER_LIMIT)
    i.send_counter = COUNTER_LIMIT
    with pytest.raises(core.CounterExhausted):
        i.seal(core.REKEY_REQUEST, b"x", COUNTER_LIMIT)


def test_a_received_counter_at_or_above_the_limit_is_refused():
    i, r = pair()
    i.send_counter = COUNTER_LIMIT - 1
    assert r.open(i.seal(core.CAPSULE, b"last", 2**64), MN_ADDR, T0) == b"last"
    assert r.open(i.seal(core.CAPSULE, b"at the limit", 2**64), MN_ADDR, T0) is None
    i.send_counter = 2**64 - 1
    assert r.open(i.seal(core.CAPSULE, b"top", 2**64), MN_ADDR, T0) is None
    assert r.replay.highest == COUNTER_LIMIT - 1


def test_the_responder_at_its_limit_forces_the_initiators_rekey():
    i, r = pair()
    r.send_counter = core.SEND_LIMIT - 1
    i.open(r.seal(core.CAPSULE, b"last"), CN_ADDR, T0)
    assert rekey.due(i, T0 + 1, after_packets=2**64)


def test_the_data_path_drops_and_counts_at_the_limit_and_the_rekey_still_goes_out():
    i, r = pair()
    sock = RecordingSocket()
    pm = PacketHandlingModule(-1, {socket.AF_INET: sock})
    pm.install(i)
    i.send_counter = core.SEND_LIMIT
    pm.send(i, core.CAPSULE, b"\x45" + bytes(27))
    pm.send(i, core.KEEPALIVE, b"")
    assert sock.sent == [] and pm.drops.counts["send counter at its limit"] == 2
    pm.rekey_tick(i, T0 + 1, rekey_after=120)
    [(datagram, address)] = sock.sent
    assert datagram[0] == core.REKEY_REQUEST and address == CN_ADDR
    assert int.from_bytes(datagram[5:13], "little") == core.SEND_LIMIT


def test_the_data_path_rotates_indices_and_retires_them():
    i, r = pair()
    sent_i, sent_r = RecordingSocket(), RecordingSocket()
    pi = PacketHandlingModule(-1, {socket.AF_INET: sent_i})
    pr = PacketHandlingModule(-1, {socket.AF_INET: sent_r})
    pi.install(i)
    pr.install(r)
    old_i, old_r = i.local_index, r.local_index
    now = T0 + 121
    pi.rekey_tick(i, now, rekey_after=120)  # Rekey Request
    pr.receive(sent_i.sent.pop()[0], MN_ADDR, now)  # Rekey Response; next keys filed
    assert set(pr._others) == {r.next.local_index}
    pi.receive(sent_r.sent.pop()[0], CN_ADDR, now)  # switch + Keep Alive under the new keys
    assert set(pi.by_index) == {i.local_index} and set(pi._others) == {old_i} and i.rekeys == 1
    pr.receive(sent_i.sent.pop()[0], MN_ADDR, now)  # promotion + Keep Alive Ack
    assert set(pr.by_index) == {r.local_index} and set(pr._others) == {old_r} and r.rekeys == 1
    pi.receive(sent_r.sent.pop()[0], CN_ADDR, now)
    assert pi.rekey_tick(i, now + 1, rekey_after=120) == now + 1 + rekey.GRACE
    pi.rekey_tick(i, now + 1 + rekey.GRACE, rekey_after=120)
    pr.rekey_tick(r, now + rekey.GRACE, rekey_after=120)
    assert set(pi._others) == set() == set(pr._others)
    assert pi.drops.total() == pr.drops.total() == 0
    pi.remove(i)
    assert pi.by_index == {} and pi._others == {}


def test_a_rekey_hands_the_seal_buffers_on_instead_of_allocating_more():
    i, r, _ = rekeyed()
    assert r.next.cipher._out is None  # next keys only open until promoted
    assert i.previous.cipher._out is None and i.cipher._out is not None
    r.open(i.seal(core.KEEPALIVE, b""), MN_ADDR, T0 + 200)
    rekey.promote(r, T0 + 200)
    assert r.cipher._out is not None and r.previous.cipher._out is None
    assert i.open(r.seal(core.CAPSULE, b"x" * 1400), CN_ADDR, T0 + 200) == b"x" * 1400


def test_core_rekey_builds_and_derives_exactly_the_golden_vectors(monkeypatch):
    import json
    from pathlib import Path

    import nacl.public

    doc = json.loads((Path(__file__).resolve().parents[2] / "protocols/vectors/tunnel.json").read_text())
    inputs, derived = doc["inputs"], doc["derived"]
    vectors = {m["name"]: m for m in doc["messages"]}
    hexkey = lambda name: bytes.fromhex(derived[name])  # noqa: E731
    mn_cn = bytes.fromhex(inputs["mn_cn_key"])
    # the vectors' tunnel: CN initiates, MN responds, under the first End Keys
    cn_peer = core.PeerInfo("cn.x", ipaddress.IPv4Address("10.64.0.3"), ipaddress.IPv6Address("fd00::3"))
    mn_peer = core.PeerInfo("mn.x", ipaddress.IPv4Address("10.64.0.2"), ipaddress.IPv6Address("fd00::2"))
    i2r, r2i = hexkey("end_key_i2r"), hexkey("end_key_r2i")
    i_index, r_index = inputs["initiator_index"], inputs["responder_index"]
    cn = core.Tunnel(
        core.Path(inputs["path_id"], "TunnelRequestToNATcn", True, mn_peer, MN_ADDR, mn_cn),
        i_index,
        r_index,
        MN_ADDR,
        crypto.DataCipher(i2r, r2i),
        T0,
    )
    mn = core.Tunnel(
        core.Path(inputs["path_id"], "TunnelRequestToNATcn", False, cn_peer, CN_ADDR, mn_cn),
        r_index,
        i_index,
        CN_ADDR,
        crypto.DataCipher(r2i, i2r),
        T0,
    )

    def with_secret(name):
        secret = bytes.fromhex(inputs[name])
        monkeypatch.setattr(nacl.public.PrivateKey, "generate", classmethod(lambda cls: cls(secret)))

    with_secret("rekey_initiator_ephemeral_secret")
    request = rekey.start(cn, T0, inputs["rekey_initiator_index"])
    assert request.hex() == vectors["Rekey Request Body"]["hex"]
    cn.send_counter = 3
    sealed = cn.seal(core.REKEY_REQUEST, request, COUNTER_LIMIT)
    assert sealed.hex() == vectors["Rekey Request (CN to MN, counter 3)"]["hex"]
    with_secret("rekey_responder_ephemeral_secret")
    response = rekey.accept_request(mn, request, T0, inputs["rekey_responder_index"])
    assert response.hex() == vectors["Rekey Response Body"]["hex"]
    assert rekey.accept_response(cn, response, T0)
    assert key_bytes(cn.cipher) == (hexkey("rekey_end_key_i2r"), hexkey("rekey_end_key_r2i"))
    assert key_bytes(mn.next.cipher) == (hexkey("rekey_end_key_r2i"), hexkey("rekey_end_key_i2r"))
    assert (cn.local_index, cn.remote_index) == (inputs["rekey_initiator_index"], inputs["rekey_responder_index"])
