"""Bad bytes never crash a listener.

Random datagrams, truncations, splices and bit flips of the golden vectors
go to every wire schema through `common.parse`: only `ParseError` may come
out. The crypto entry points a listener calls on untrusted bytes may only
raise the project's two errors. Anything else is a bug (STYLE: "a listener
catches those two per datagram, counts them, and carries on").
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import construct
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cyphonic import crypto
from cyphonic.errors import AuthenticationError, ParseError
import importlib
import pkgutil

import cyphonic.wire
from cyphonic.wire.common import parse

# CYPHONIC_FUZZ_EXAMPLES=20000 for a long run; 200 keeps the unit suite fast.
FUZZ = settings(max_examples=int(os.environ.get("CYPHONIC_FUZZ_EXAMPLES", "200")), deadline=None)

VECTORS = Path(__file__).resolve().parents[2] / "protocols" / "vectors"
# every module of cyphonic/wire, so a new protocol's schemas are fuzzed too
MODULES = {
    m.name: importlib.import_module(f"cyphonic.wire.{m.name}") for m in pkgutil.iter_modules(cyphonic.wire.__path__)
}
certificate, common, signaling, tunnel = (MODULES[n] for n in ("certificate", "common", "signaling", "tunnel"))
_CONSTRUCT_LIBRARY = {id(v) for v in vars(construct).values()}


def wire_schemas() -> list[tuple[str, construct.Construct]]:
    """Every schema the wire modules declare (new ones are fuzzed too)."""
    seen, out = set(), []
    for module_name, module in MODULES.items():
        for name, obj in vars(module).items():
            if not isinstance(obj, construct.Construct) or id(obj) in _CONSTRUCT_LIBRARY or id(obj) in seen:
                continue
            seen.add(id(obj))
            out.append((f"{module_name}.{name}", obj))
    return out


SCHEMAS = wire_schemas()
SCHEMA_BY_NAME = dict(SCHEMAS)

VECTORS_ALL = [
    (m["name"], SCHEMA_BY_NAME[m["schema"]], bytes.fromhex(m["hex"]), m)
    for path in sorted(VECTORS.glob("*.json"))
    for m in json.loads(path.read_text())["messages"]
]
VECTOR_IDS = [v[0] for v in VECTORS_ALL]


def only_parse_errors(schema, data: bytes):
    try:
        return parse(schema, data)
    except ParseError:
        return None


def ends_terminated(schema) -> bool:
    """A schema that must consume every byte (no GreedyBytes tail)."""
    return isinstance(schema, construct.Struct) and schema.subcons[-1] is construct.Terminated


def greedy_tail(schema) -> str | None:
    """The name of a schema's trailing GreedyBytes field (`sealed`, `inner`, `datagram`)."""
    last = schema.subcons[-1] if isinstance(schema, construct.Struct) else None
    return last.name if getattr(last, "subcon", None) is construct.GreedyBytes else None


def test_every_message_schema_is_fuzzed():
    names = {n for n, _ in SCHEMAS}
    for required in (
        "certificate.Certificate", "signaling.LoginRequest", "signaling.LoginResponse", "signaling.LoginReject",
        "signaling.LoginGrant", "signaling.Ticket", "signaling.NmsRequest", "signaling.NmsReply",
        "signaling.RegistrationBody", "signaling.RegistrationAck", "signaling.DirectionRequestBody",
        "signaling.RouteDirectionBody", "signaling.SignalingErrorBody", "signaling.AckBody",
        "tunnel.TunnelRequest", "tunnel.TunnelResponse", "tunnel.TunnelHello", "tunnel.Capsule",
        "tunnel.TunnelUpdateBody", "tunnel.TunnelUpdateAckBody", "common.Locator",
    ):
        assert required in names


# --- random bytes ---------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=600))
def test_random_bytes_raise_only_parse_error(data):
    for _, schema in SCHEMAS:
        only_parse_errors(schema, data)


@FUZZ
@given(type_byte=st.sampled_from(sorted(common.TYPE.values())), rest=st.binary(max_size=400))
def test_random_bodies_behind_a_valid_type_raise_only_parse_error(type_byte, rest):
    data = bytes([type_byte, 1]) + rest  # get past type and version
    for _, schema in SCHEMAS:
        only_parse_errors(schema, data)


# --- mutations of valid messages ---------------------------------------------------------


@pytest.mark.parametrize("name, schema, data, vector", VECTORS_ALL, ids=VECTOR_IDS)
def test_every_truncation_raises_only_parse_error(name, schema, data, vector):
    # Where the schema ends in a greedy field (`sealed`, a relayed frame's
    # `inner`), a cut inside it still parses (the key catches it); a cut
    # before it must not.
    tail = greedy_tail(schema)
    fixed = len(data) - len(bytes.fromhex(vector["fields"][tail])) if tail else len(data)
    for cut in range(len(data)):
        result = only_parse_errors(schema, data[:cut])
        if ends_terminated(schema) or cut < fixed:
            assert result is None, f"{name} parsed when cut to {cut} bytes"


@pytest.mark.parametrize("name, schema, data, vector", VECTORS_ALL, ids=VECTOR_IDS)
def test_trailing_bytes_are_refused_where_the_schema_ends(name, schema, data, vector):
    result = only_parse_errors(schema, data + b"\0")
    if ends_terminated(schema):
        assert result is None


@FUZZ
@given(
    vector=st.sampled_from(VECTORS_ALL),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 7)), min_size=1, max_size=4),
)
def test_bit_flips_raise_only_parse_error(vector, flips):
    _, schema, data, _ = vector
    mutated = bytearray(data)
    for position, bit in flips:
        mutated[position % len(mutated)] ^= 1 << bit
    for _, other in SCHEMAS:
        only_parse_errors(other, bytes(mutated))


@FUZZ
@given(vector=st.sampled_from(VECTORS_ALL), cut=st.integers(min_value=0), tail=st.binary(max_size=300))
def test_valid_prefix_with_random_tail_raises_only_parse_error(vector, cut, tail):
    _, schema, data, _ = vector
    only_parse_errors(schema, data[: cut % (len(data) + 1)] + tail)


# --- signed and sealed messages: a flip is caught by the key ---------------------------

SIGNED = [v for v in VECTORS_ALL if "signed_by" in v[3] and v[3]["schema"] != "certificate.Certificate"]
NONCE = bytes.fromhex(json.loads((VECTORS / "authentication.json").read_text())["inputs"]["request_nonce"])


@FUZZ
@given(vector=st.sampled_from(SIGNED), position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_any_bit_flip_in_a_signed_message_fails_verification(vector, position, bit):
    _, schema, data, meta = vector
    mutated = bytearray(data)
    mutated[position % len(mutated)] ^= 1 << bit
    public = bytes.fromhex(meta["signed_by"]["public"])
    prefix = NONCE if meta["schema"] != "signaling.LoginRequest" else b""
    with pytest.raises((ParseError, AuthenticationError)):
        msg = parse(schema, bytes(mutated))
        crypto.verify_signature(public, prefix + bytes(mutated[:-64]), bytes(msg.signature))


SEALED = [v for v in VECTORS_ALL if "sealed_with" in v[3]]


@FUZZ
@given(vector=st.sampled_from(SEALED), position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_any_bit_flip_in_a_sealed_message_fails_to_open(vector, position, bit):
    """Header, ticket or body: the AAD rule makes every byte count (the Login
    Response's grant has no AAD; its signature covers the rest)."""
    _, schema, data, meta = vector
    check = meta["sealed_with"]
    mutated = bytearray(data)
    mutated[position % len(mutated)] ^= 1 << bit
    key = bytes.fromhex(check["key"])
    with pytest.raises((ParseError, AuthenticationError)):
        msg = parse(schema, bytes(mutated))
        sealed = bytes(msg[check["field"]])
        if meta["schema"] == "signaling.LoginResponse":
            crypto.open_sealed(key, sealed)
            crypto.verify_signature(
                bytes.fromhex(meta["signed_by"]["public"]), NONCE + bytes(mutated[:-64]), bytes(msg.signature)
            )
        else:
            crypto.open_sealed(key, sealed, bytes(mutated[: len(mutated) - len(sealed)]))


# --- crypto on untrusted bytes -------------------------------------------------------------

CERT_VECTORS = [v for v in VECTORS_ALL if v[3]["schema"] == "certificate.Certificate"]
CA_PUBLIC = bytes.fromhex(CERT_VECTORS[0][3]["certificate_check"]["ca_public"])
NOW = CERT_VECTORS[0][3]["certificate_check"]["now"]


@FUZZ
@given(data=st.binary(max_size=400))
def test_verify_certificate_on_random_bytes_raises_only_project_errors(data):
    with pytest.raises((ParseError, AuthenticationError)):
        crypto.verify_certificate(data, CA_PUBLIC, NOW)


@FUZZ
@given(
    serial=st.integers(0, 2**64 - 1),
    role=st.integers(0, 255),
    fqdn=st.text(alphabet=st.characters(max_codepoint=127), max_size=40),
    keys=st.binary(min_size=64, max_size=64),
    validity=st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
    issuer=st.one_of(st.just(CA_PUBLIC), st.binary(min_size=32, max_size=32)),
    signature=st.binary(min_size=64, max_size=64),
)
def test_well_formed_forgeries_are_refused(serial, role, fqdn, keys, validity, issuer, signature):
    body = certificate.CertificateBody.build(
        dict(serial=serial, role=role, fqdn=fqdn, sign_key=keys[:32], dh_key=keys[32:],
             not_before=validity[0], not_after=validity[1], issuer=issuer)
    )
    with pytest.raises(AuthenticationError):
        crypto.verify_certificate(body + signature, CA_PUBLIC, NOW)


@pytest.mark.parametrize("name, schema, data, vector", CERT_VECTORS, ids=[v[0] for v in CERT_VECTORS])
def test_every_bit_flip_of_a_certificate_is_refused(name, schema, data, vector):
    for position in range(len(data)):
        for bit in range(8):
            mutated = bytearray(data)
            mutated[position] ^= 1 << bit
            with pytest.raises((ParseError, AuthenticationError)):
                crypto.verify_certificate(bytes(mutated), CA_PUBLIC, NOW)


@FUZZ
@given(key=st.binary(min_size=32, max_size=32), data=st.binary(max_size=200), aad=st.binary(max_size=40))
def test_open_sealed_on_random_bytes_raises_only_authentication_error(key, data, aad):
    with pytest.raises(AuthenticationError):
        crypto.open_sealed(key, data, aad)


CAPSULES = [v for v in VECTORS_ALL if "data_cipher" in v[3]]


def cipher_of(vector: dict) -> crypto.DataCipher:
    """A receiver of the capsule vector, under the suite it names (ChaCha20-Poly1305 if none)."""
    check = vector["data_cipher"]
    return crypto.DataCipher(bytes(32), bytes.fromhex(check["key"]), suite=check.get("suite", crypto.CHACHA20_POLY1305))


def receiver(vector) -> crypto.DataCipher:
    return cipher_of(vector[3])


@FUZZ
@given(vector=st.sampled_from(CAPSULES), data=st.binary(max_size=2000))
def test_data_cipher_on_random_bytes_raises_only_authentication_error(vector, data):
    with pytest.raises(AuthenticationError):
        receiver(vector).open(data, tunnel.CAPSULE_HEADER)


@pytest.mark.parametrize("name, schema, data, vector", CAPSULES, ids=[v[0] for v in CAPSULES])
def test_data_cipher_refuses_every_truncation(name, schema, data, vector):
    cipher = cipher_of(vector)
    assert cipher.open(data, tunnel.CAPSULE_HEADER) == bytes.fromhex(vector["data_cipher"]["plaintext"])
    for cut in range(len(data)):
        with pytest.raises(AuthenticationError):
            cipher.open(data[:cut], tunnel.CAPSULE_HEADER)


@pytest.mark.parametrize("name, schema, data, vector", CAPSULES, ids=[v[0] for v in CAPSULES])
def test_data_cipher_refuses_every_bit_flip(name, schema, data, vector):
    cipher = cipher_of(vector)
    for position in range(len(data)):
        for bit in range(8):
            mutated = bytearray(data)
            mutated[position] ^= 1 << bit
            with pytest.raises(AuthenticationError):
                cipher.open(bytes(mutated), tunnel.CAPSULE_HEADER)


@FUZZ
@given(vector=st.sampled_from(CAPSULES), extra=st.binary(min_size=1, max_size=64))
def test_data_cipher_refuses_appended_bytes(vector, extra):
    with pytest.raises(AuthenticationError):
        receiver(vector).open(vector[2] + extra, tunnel.CAPSULE_HEADER)


# --- known schema defects (strict xfail: they start failing once fixed) ---------------------


def test_locator_with_unknown_family_does_not_parse():
    with pytest.raises(ParseError):
        parse(common.Locator, bytes([5, 0x9C, 0x40]))
