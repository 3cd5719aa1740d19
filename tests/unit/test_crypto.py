"""The key hierarchy (cyphonic.crypto) does what protocols/ says.

Certificates are refused with the reason an operator can act on; sealed
boxes and capsules fail on any change of ciphertext, AAD or key; End Keys
need an ephemeral secret, not just the key the NMS handed out; the data
cipher is exactly ChaCha20-Poly1305-IETF with the documented nonce and AAD;
and the hot path's header struct is the Capsule schema.
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct

import nacl.bindings as sodium
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cyphonic import crypto, keys
from cyphonic.core import tunnel as core
from cyphonic.errors import AuthenticationError, ParseError
from cyphonic.wire import signaling
from cyphonic.wire import tunnel as wire
from cyphonic.wire.common import TYPE, build, parse

PROPERTY = settings(max_examples=200, deadline=None)

NOW = 1_767_225_600
DAY = 86_400
CA = crypto.Identity.generate()
HOLDER = crypto.Identity.generate()


def issue(ca: crypto.Identity = CA, **overrides) -> bytes:
    fields = dict(
        serial=42,
        role="node",
        fqdn="mn.cyphonic.example",
        sign_key=HOLDER.sign_public,
        dh_key=HOLDER.dh_public,
        not_before=NOW - DAY,
        not_after=NOW + DAY,
    )
    fields.update(overrides)
    return crypto.issue_certificate(ca, **fields)


def refusal(data: bytes, **kwargs) -> str:
    kwargs.setdefault("ca_public", CA.sign_public)
    kwargs.setdefault("now", NOW)
    with pytest.raises(AuthenticationError) as info:
        crypto.verify_certificate(data, **kwargs)
    return info.value.reason


# --- certificates --------------------------------------------------------------------------


def test_issued_certificate_verifies_and_names_its_holder():
    body = crypto.verify_certificate(issue(), CA.sign_public, NOW, role="node")
    assert body.fqdn == "mn.cyphonic.example"
    assert body.serial == 42
    assert str(body.role) == "node"
    assert bytes(body.sign_key) == HOLDER.sign_public
    assert bytes(body.dh_key) == HOLDER.dh_public
    assert bytes(body.issuer) == CA.sign_public


def test_certificate_of_a_foreign_ca_is_refused_as_unknown_ca():
    assert refusal(issue(ca=crypto.Identity.generate())) == "unknown CA"


def test_certificate_naming_our_ca_but_signed_by_another_is_refused():
    forged = bytearray(issue(ca=crypto.Identity.generate()))
    body_len = len(forged) - 64
    forged[body_len - 32 : body_len] = CA.sign_public  # claim our CA as issuer
    assert refusal(bytes(forged)) == "bad signature"


def test_expired_certificate_is_refused():
    cert = issue(not_after=NOW - 1)
    assert refusal(cert) == "expired"


def test_certificate_is_valid_through_its_last_second():
    cert = issue(not_before=NOW - 10, not_after=NOW)
    crypto.verify_certificate(cert, CA.sign_public, NOW)
    assert refusal(cert, now=NOW + 1) == "expired"


def test_certificate_not_yet_valid_is_refused():
    cert = issue(not_before=NOW + 1)
    assert refusal(cert) == "not yet valid"
    crypto.verify_certificate(cert, CA.sign_public, NOW + 1)


def test_revoked_serial_is_refused():
    cert = issue(serial=7)
    assert refusal(cert, revoked={7}) == "revoked"
    crypto.verify_certificate(cert, CA.sign_public, NOW, revoked={6, 8})


def test_certificate_for_another_role_is_refused():
    cert = issue(role="node")
    assert refusal(cert, role="authority") == "wrong role"
    crypto.verify_certificate(issue(role="authority"), CA.sign_public, NOW, role="authority")


FQDN_END = 11 + len("mn.cyphonic.example")
BODY_OFFSETS = {
    "serial": 8,
    "role": 9,
    "fqdn": 12,
    "sign_key": FQDN_END,
    "dh_key": FQDN_END + 32,
    "not_before": FQDN_END + 71,
    "not_after": FQDN_END + 79,
}


@pytest.mark.parametrize("field", sorted(BODY_OFFSETS))
def test_tampered_body_is_refused_as_bad_signature(field):
    cert = bytearray(issue())
    cert[BODY_OFFSETS[field]] ^= 0x01
    assert refusal(bytes(cert)) == "bad signature"


def test_tampered_issuer_is_refused_as_unknown_ca():
    cert = bytearray(issue())
    cert[-65] ^= 0x01  # last byte of the issuer field
    assert refusal(bytes(cert)) == "unknown CA"


def test_tampered_signature_is_refused():
    cert = bytearray(issue())
    cert[-1] ^= 0x80
    assert refusal(bytes(cert)) == "bad signature"


def test_truncated_or_padded_certificate_does_not_parse():
    cert = issue()
    with pytest.raises(ParseError):
        crypto.verify_certificate(cert[:-1], CA.sign_public, NOW)
    with pytest.raises(ParseError):
        crypto.verify_certificate(cert + b"\0", CA.sign_public, NOW)


def test_certificate_survives_pem_armour():
    cert = issue()
    pem = keys.certificate_to_pem(cert)
    assert pem.startswith(keys.PEM_HEAD) and pem.rstrip().endswith(keys.PEM_TAIL)
    assert keys.certificate_from_pem(pem) == cert


def test_self_signed_ca_certificate_is_a_trust_anchor():
    ca_cert = issue(role="ca", sign_key=CA.sign_public, dh_key=CA.dh_public)
    assert crypto.ca_public_key(ca_cert) == CA.sign_public
    with pytest.raises(AuthenticationError):
        crypto.ca_public_key(issue(role="node", sign_key=CA.sign_public))  # not a CA
    with pytest.raises(AuthenticationError):
        crypto.ca_public_key(issue(role="ca"))  # issuer is not its own key


# --- signaling seal (XChaCha20-Poly1305) ------------------------------------------------------


@PROPERTY
@given(plaintext=st.binary(max_size=300), aad=st.binary(max_size=64))
def test_sealed_box_round_trip(plaintext, aad):
    key = crypto.random_key()
    sealed = crypto.seal(key, plaintext, aad)
    assert len(sealed) == crypto.XNONCE + len(plaintext) + crypto.TAG
    assert crypto.open_sealed(key, sealed, aad) == plaintext
    # the documented format: nonce || XChaCha20-Poly1305-IETF(plaintext, aad)
    nonce = sealed[: crypto.XNONCE]
    assert sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed[crypto.XNONCE :], aad, nonce, key) == plaintext


def test_sealing_twice_uses_fresh_nonces():
    key = crypto.random_key()
    assert crypto.seal(key, b"same")[: crypto.XNONCE] != crypto.seal(key, b"same")[: crypto.XNONCE]


@PROPERTY
@given(plaintext=st.binary(max_size=100), position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_sealed_box_detects_any_flipped_bit(plaintext, position, bit):
    key = crypto.random_key()
    sealed = bytearray(crypto.seal(key, plaintext, b"header"))
    sealed[position % len(sealed)] ^= 1 << bit
    with pytest.raises(AuthenticationError):
        crypto.open_sealed(key, bytes(sealed), b"header")


@PROPERTY
@given(aad=st.binary(max_size=32), other=st.binary(max_size=32))
def test_sealed_box_is_bound_to_its_aad(aad, other):
    key = crypto.random_key()
    sealed = crypto.seal(key, b"locators", aad)
    if other != aad:
        with pytest.raises(AuthenticationError):
            crypto.open_sealed(key, sealed, other)


def test_sealed_box_does_not_open_under_another_key():
    sealed = crypto.seal(crypto.random_key(), b"session key")
    with pytest.raises(AuthenticationError):
        crypto.open_sealed(crypto.random_key(), sealed)


def test_sealed_box_too_short_is_refused():
    with pytest.raises(AuthenticationError):
        crypto.open_sealed(crypto.random_key(), bytes(crypto.XNONCE + crypto.TAG - 1))



# --- sealed messages: the header as AAD --------------------------------------------------------


def test_a_sealed_message_is_its_header_then_the_body_sealed_with_that_header_as_aad():
    key = crypto.random_key()
    fields = dict(header=dict(type="RouteDirection", txid=7))
    data = crypto.seal_message(signaling.NmsReply, fields, key, b"body")
    header = build(signaling.NmsReply, dict(fields, sealed=b""))
    assert data.startswith(header)
    assert crypto.open_sealed(key, data[len(header) :], header) == b"body"
    msg, plain = crypto.open_message(signaling.NmsReply, data, key)
    assert (str(msg.header.type), msg.header.txid, plain) == ("RouteDirection", 7, b"body")


def test_an_altered_header_does_not_open():
    key = crypto.random_key()
    data = bytearray(crypto.seal_message(signaling.NmsReply, dict(header=dict(type="RouteDirection", txid=7)), key, b"x"))
    data[2] ^= 1  # the txid
    with pytest.raises(AuthenticationError):
        crypto.open_message(signaling.NmsReply, bytes(data), key)
    with pytest.raises(ParseError):
        crypto.open_message(signaling.NmsReply, b"\x13", key)


def test_the_key_of_a_sealed_message_may_come_from_the_message():
    key = crypto.random_key()
    fields = dict(header=dict(type="RegistrationRequest", txid=1), ticket=key)  # a stand-in for a sealed ticket
    data = crypto.seal_message(signaling.NmsRequest, fields, key, b"locators")
    _, plain = crypto.open_message(signaling.NmsRequest, data, lambda msg: bytes(msg.ticket))
    assert plain == b"locators"

# --- kdf -------------------------------------------------------------------------------


def test_kdf_is_blake2b_keyed_by_label_over_length_prefixed_parts():
    expected = hashlib.blake2b(b"\x00\x02ab\x00\x01c", key=b"label", digest_size=32).digest()
    assert crypto.kdf(b"label", b"ab", b"c") == expected


def test_kdf_separates_labels_and_part_boundaries():
    base = crypto.kdf(b"cyphonic end key i2r", b"ab", b"c")
    assert base != crypto.kdf(b"cyphonic end key r2i", b"ab", b"c")
    assert base != crypto.kdf(b"cyphonic end key i2r", b"a", b"bc")
    assert base != crypto.kdf(b"cyphonic end key i2r", b"abc")


# --- ephemeral agreement and End Keys ------------------------------------------------------------


def handshake(path_id: int = 0xA001):
    mn_cn_key = crypto.random_key()
    initiator, responder = crypto.Ephemeral(), crypto.Ephemeral()
    transcript = path_id.to_bytes(4, "big") + initiator.public + responder.public
    i_keys = crypto.end_keys(initiator.agree(responder.public), mn_cn_key, transcript, initiator=True)
    r_keys = crypto.end_keys(responder.agree(initiator.public), mn_cn_key, transcript, initiator=False)
    return mn_cn_key, initiator, responder, transcript, i_keys, r_keys


def test_both_ends_derive_matching_end_keys_one_per_direction():
    _, _, _, _, (i_send, i_recv), (r_send, r_recv) = handshake()
    assert i_send == r_recv
    assert r_send == i_recv
    assert i_send != i_recv


def test_end_keys_need_an_ephemeral_secret_not_just_the_mn_cn_key():
    """The NMS (or a TRS, or whoever records the MN–CN key) sees both
    ephemeral public keys and knows the MN–CN key, but without one of the
    ephemeral secrets every guess at the shared secret gives other keys."""
    mn_cn_key, initiator, responder, transcript, i_keys, _ = handshake()
    outsider = crypto.Ephemeral()
    guesses = [
        bytes(32),
        mn_cn_key,
        outsider.agree(initiator.public),
        outsider.agree(responder.public),
        sodium.crypto_scalarmult(mn_cn_key, responder.public),
    ]
    for shared in guesses:
        for as_initiator in (True, False):
            derived = crypto.end_keys(shared, mn_cn_key, transcript, initiator=as_initiator)
            assert not set(derived) & set(i_keys)


def test_end_keys_are_bound_to_the_mn_cn_key_and_the_transcript():
    mn_cn_key, initiator, responder, transcript, i_keys, _ = handshake()
    shared = initiator.agree(responder.public)
    assert crypto.end_keys(shared, crypto.random_key(), transcript, initiator=True) != i_keys
    other_path = (0xA002).to_bytes(4, "big") + transcript[4:]
    assert crypto.end_keys(shared, mn_cn_key, other_path, initiator=True) != i_keys


@pytest.mark.parametrize(
    "public",
    [
        bytes(32),  # the identity: result all zeros
        (1).to_bytes(32, "little"),  # order 1
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),  # order 8
        (2**255 - 19 - 1).to_bytes(32, "little"),  # p - 1: order 2
    ],
)
def test_low_order_ephemeral_keys_are_refused(public):
    with pytest.raises(AuthenticationError):
        crypto.Ephemeral().agree(public)


def test_ephemeral_of_wrong_length_is_refused():
    with pytest.raises(AuthenticationError):
        crypto.Ephemeral().agree(bytes(31))


def test_login_key_depends_on_the_request_nonce():
    node, server = crypto.Ephemeral(), crypto.Ephemeral()
    shared = node.agree(server.public)
    assert crypto.login_key(shared, bytes(16)) != crypto.login_key(shared, b"\1" + bytes(15))
    assert crypto.login_key(shared, bytes(16)) == crypto.login_key(server.agree(node.public), bytes(16))


# --- the data cipher ---------------------------------------------------------------------


def capsule_header(counter: int, index: int = 0x5E6F7081, type_: str = "CapsuleMessage") -> bytes:
    return wire.CAPSULE_HEADER_STRUCT.pack(TYPE[type_], index, counter)


def ciphers():
    _, _, _, _, (i_send, i_recv), (r_send, r_recv) = handshake()
    return crypto.DataCipher(i_send, i_recv), crypto.DataCipher(r_send, r_recv), i_send


@PROPERTY
@given(plaintext=st.binary(max_size=1500), counter=st.integers(0, 2**64 - 1))
def test_capsule_sealed_by_one_end_opens_at_the_other(plaintext, counter):
    initiator, responder, _ = ciphers()
    datagram = initiator.seal(capsule_header(counter), plaintext)
    assert responder.open(datagram, wire.CAPSULE_HEADER) == plaintext


@PROPERTY
@given(plaintext=st.binary(max_size=1500), counter=st.integers(0, 2**64 - 1), index=st.integers(0, 2**32 - 1))
def test_capsule_is_chacha20_poly1305_ietf_with_counter_nonce_and_header_aad(plaintext, counter, index):
    key = crypto.random_key()
    header = capsule_header(counter, index)
    nonce = b"\0\0\0\0" + struct.pack("<Q", counter)
    expected = header + sodium.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, header, nonce, key)
    assert crypto.DataCipher(key, key).seal(header, plaintext) == expected


def test_capsule_overhead_is_29_bytes():
    initiator, responder, _ = ciphers()
    assert len(initiator.seal(capsule_header(0, type_="KeepAlive"), b"")) == 29
    packet = bytes(1420)
    assert len(initiator.seal(capsule_header(1), packet)) == 1420 + wire.OVERHEAD


def test_largest_tun_read_round_trips():
    initiator, responder, _ = ciphers()
    packet = bytes(range(256)) * 255 + bytes(255)  # 65535 bytes
    assert responder.open(initiator.seal(capsule_header(3), packet), wire.CAPSULE_HEADER) == packet


def test_capsule_does_not_open_in_the_direction_it_was_sealed():
    """One key per direction: a capsule reflected back to its sender fails."""
    initiator, _, _ = ciphers()
    datagram = initiator.seal(capsule_header(0), b"ping")
    with pytest.raises(AuthenticationError):
        initiator.open(datagram, wire.CAPSULE_HEADER)


@PROPERTY
@given(position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_modified_capsule_fails(position, bit):
    initiator, responder, _ = ciphers()
    datagram = bytearray(initiator.seal(capsule_header(9), b"an inner IP packet"))
    datagram[position % len(datagram)] ^= 1 << bit  # header (AAD, nonce) or body
    with pytest.raises(AuthenticationError):
        responder.open(bytes(datagram), wire.CAPSULE_HEADER)


def test_capsule_with_another_counter_in_the_header_fails():
    initiator, responder, _ = ciphers()
    datagram = initiator.seal(capsule_header(5), b"x")
    moved = capsule_header(6) + datagram[wire.CAPSULE_HEADER :]
    with pytest.raises(AuthenticationError):
        responder.open(moved, wire.CAPSULE_HEADER)


def tunnel_pair():
    """Two core.Tunnel states sharing End Keys (the daemon's data state)."""
    _, _, _, _, (i_send, i_recv), (r_send, r_recv) = handshake()
    peer = core.PeerInfo("cn.cyphonic.example", ipaddress.IPv4Address("10.64.0.3"), ipaddress.IPv6Address("fd00::3"))
    path = core.Path(0xA001, "TunnelRequestToCN", True, peer, ("192.0.2.1", 40000), bytes(32))
    sender = core.Tunnel(path, 1, 2, ("192.0.2.2", 40000), crypto.DataCipher(i_send, i_recv), NOW)
    receiver = core.Tunnel(path, 2, 1, ("192.0.2.1", 40000), crypto.DataCipher(r_send, r_recv), NOW)
    return sender, receiver


def test_replayed_capsule_is_dropped_once_seen():
    sender, receiver = tunnel_pair()
    datagram = sender.seal(TYPE["CapsuleMessage"], b"packet")
    assert receiver.open(datagram, ("192.0.2.1", 40000), NOW) == b"packet"
    assert receiver.open(datagram, ("192.0.2.1", 40000), NOW) is None


def test_replay_from_another_address_moves_nothing():
    sender, receiver = tunnel_pair()
    first = sender.seal(TYPE["CapsuleMessage"], b"one")
    second = sender.seal(TYPE["CapsuleMessage"], b"two")
    home = ("192.0.2.1", 40000)
    assert receiver.open(second, home, NOW) == b"two"
    # an older counter, inside the window, first seen from elsewhere: it is
    # delivered but is not newer than everything seen, so it moves nothing
    assert receiver.open(first, ("203.0.113.66", 1), NOW) == b"one"
    assert receiver.endpoint == home
    assert receiver.open(second, ("203.0.113.66", 1), NOW) is None
    assert receiver.endpoint == home


def test_newest_authentic_capsule_moves_the_endpoint():
    sender, receiver = tunnel_pair()
    receiver.open(sender.seal(TYPE["CapsuleMessage"], b"a"), ("192.0.2.1", 40000), NOW)
    update = sender.seal(TYPE["TunnelUpdate"], b"")
    assert receiver.open(update, ("198.51.100.77", 40000), NOW) == b""
    assert receiver.endpoint == ("198.51.100.77", 40000)


def test_forged_capsule_from_another_address_moves_nothing():
    sender, receiver = tunnel_pair()
    forged = capsule_header(10**6, index=2) + bytes(32)
    with pytest.raises(AuthenticationError):
        receiver.open(forged, ("203.0.113.66", 1), NOW)
    assert receiver.endpoint == ("192.0.2.1", 40000)
    # ...and did not advance the window: the real counter 0 still opens
    assert receiver.open(sender.seal(TYPE["CapsuleMessage"], b"ok"), ("192.0.2.1", 40000), NOW) == b"ok"


def test_replay_window_is_2048_counters():
    sender, receiver = tunnel_pair()
    datagrams = [sender.seal(TYPE["KeepAlive"], b"") for _ in range(2050)]
    assert receiver.open(datagrams[2049], ("192.0.2.1", 40000), NOW) == b""
    assert receiver.open(datagrams[1], ("192.0.2.1", 40000), NOW) is None  # 2048 behind: too old
    assert receiver.open(datagrams[2], ("192.0.2.1", 40000), NOW) == b""  # 2047 behind: still inside
    assert receiver.open(datagrams[2], ("192.0.2.1", 40000), NOW) is None


# --- the hot path's header struct is the Capsule schema ------------------------------------------

COUNTERS = st.integers(0, 2**64 - 1)
INDICES = st.integers(0, 2**32 - 1)
TYPES = st.one_of(st.sampled_from([0x30, 0x31, 0x32, 0x33]), st.integers(0, 255))


def test_capsule_header_struct_is_13_bytes():
    assert wire.CAPSULE_HEADER_STRUCT.size == wire.CAPSULE_HEADER == 13


@PROPERTY
@given(type_=TYPES, index=INDICES, counter=COUNTERS, body=st.binary(max_size=64))
def test_capsule_header_struct_builds_what_the_schema_builds(type_, index, counter, body):
    schema_bytes = build(wire.Capsule, dict(type=type_, receiver_index=index, counter=counter, sealed=body))
    assert wire.CAPSULE_HEADER_STRUCT.pack(type_, index, counter) + body == schema_bytes


@PROPERTY
@given(data=st.binary(min_size=13, max_size=80))
def test_capsule_header_struct_reads_what_the_schema_reads(data):
    parsed = parse(wire.Capsule, data)
    assert wire.CAPSULE_HEADER_STRUCT.unpack_from(data) == (int(parsed.type), parsed.receiver_index, parsed.counter)
    assert bytes(parsed.sealed) == data[13:]


@PROPERTY
@given(data=st.binary(max_size=12))
def test_capsule_header_struct_and_schema_both_refuse_short_headers(data):
    with pytest.raises(ParseError):
        parse(wire.Capsule, data)
    with pytest.raises(struct.error):
        wire.CAPSULE_HEADER_STRUCT.unpack_from(data)
