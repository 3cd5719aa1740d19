"""The golden vectors of protocols/ against the wire schemas and crypto.

Each vector is parsed with its schema and compared field by field, built
from its fields and compared byte for byte, and then every check it records
(signature, sealed field, certificate, data cipher) is run through
cyphonic.crypto. The vectors were made with hashlib and nacl.bindings
directly (protocols/vectors/generate.py), so these tests hold
cyphonic.crypto to the written rules, not to itself.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from pathlib import Path

import nacl.bindings as sodium
import nacl.public
import pytest
from construct import Container, ListContainer

from cyphonic import crypto
from cyphonic.core.relay import RelayLink, RelayService
from cyphonic.errors import AuthenticationError
from cyphonic.wire import common, relay, signaling, tunnel
from cyphonic.wire.common import build, locator_text, parse

ROOT = Path(__file__).resolve().parents[2]
PROTOCOLS = ROOT / "protocols"
VECTORS = PROTOCOLS / "vectors"
# every protocol document but the overview: each must have vectors
DOCUMENTS = sorted(p.stem for p in PROTOCOLS.glob("*.md") if p.name != "README.md")

# Field names whose JSON string is text (an enum label or a name); every
# other string in a vector's fields is hex.
TEXT_FIELDS = {"type", "role", "process", "code", "reason", "family", "fqdn", "peer_fqdn", "target", "detail"}


DOCS = {p.stem: json.loads(p.read_text()) for p in sorted(VECTORS.glob("*.json"))}
MESSAGES = [(doc["protocol"], m) for doc in DOCS.values() for m in doc["messages"]]
IDS = [f"{proto}: {m['name']}" for proto, m in MESSAGES]


def schema_of(name: str):
    """A vector's schema, "module.Schema" of cyphonic.wire."""
    module, attr = name.split(".")
    return getattr(importlib.import_module(f"cyphonic.wire.{module}"), attr)


def plain(value):
    """A parsed construct value as the JSON of a vector writes it."""
    if isinstance(value, Container):
        if {"data", "value", "offset1", "offset2", "length"} <= set(value):  # RawCopy
            return {"value": plain(value.value)}
        return {k: plain(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, ListContainer):
        return [plain(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, str):
        return str(value)
    return value


def decode(fields, key: str | None = None):
    """A vector's JSON fields as values for construct's build."""
    if isinstance(fields, dict):
        return {k: decode(v, k) for k, v in fields.items()}
    if isinstance(fields, list):
        return [decode(v, key) for v in fields]
    if isinstance(fields, str) and key not in TEXT_FIELDS:
        return bytes.fromhex(fields)
    return fields


def message(protocol: str, name: str) -> dict:
    return next(m for m in DOCS[protocol]["messages"] if m["name"] == name)


def raw(protocol: str, name: str) -> bytes:
    return bytes.fromhex(message(protocol, name)["hex"])


def test_every_protocol_document_has_vectors():
    assert DOCUMENTS, "no protocol documents found"
    assert set(DOCS) == set(DOCUMENTS), "protocols/*.md and protocols/vectors/*.json differ"
    assert all(doc["protocol"] == name and doc["messages"] for name, doc in DOCS.items())


@pytest.mark.parametrize("protocol, vector", MESSAGES, ids=IDS)
def test_vector_schema_is_a_wire_schema(protocol, vector):
    module, attr = vector["schema"].split(".")
    assert hasattr(importlib.import_module(f"cyphonic.wire.{module}"), attr), vector["schema"]


# --- schema <-> vector ---------------------------------------------------------


@pytest.mark.parametrize("protocol, vector", MESSAGES, ids=IDS)
def test_vector_parses_to_its_fields(protocol, vector):
    parsed = parse(schema_of(vector["schema"]), bytes.fromhex(vector["hex"]))
    assert plain(parsed) == vector["fields"]


@pytest.mark.parametrize("protocol, vector", MESSAGES, ids=IDS)
def test_vector_builds_from_its_fields(protocol, vector):
    built = build(schema_of(vector["schema"]), decode(vector["fields"]))
    assert built.hex() == vector["hex"]


@pytest.mark.parametrize("protocol, vector", MESSAGES, ids=IDS)
def test_vector_layout_tiles_the_message(protocol, vector):
    offset = 0
    for part in vector["layout"]:
        assert part["offset"] == offset, part["field"]
        offset += len(part["hex"]) // 2
    assert "".join(p["hex"] for p in vector["layout"]) == vector["hex"]


def type_name(vector) -> str | None:
    fields = vector["fields"]
    return fields.get("type") or fields.get("header", {}).get("type")


DATAGRAMS = [(p, m) for p, m in MESSAGES if type_name(m)]


@pytest.mark.parametrize("protocol, vector", DATAGRAMS, ids=[f"{p}: {m['name']}" for p, m in DATAGRAMS])
def test_first_byte_is_the_message_type(protocol, vector):
    assert bytes.fromhex(vector["hex"])[0] == common.TYPE[type_name(vector)]


# --- the checks each vector records ------------------------------------------------

SIGNED = [(p, m) for p, m in MESSAGES if "signed_by" in m]
SEALED = [(p, m) for p, m in MESSAGES if "sealed_with" in m]
CERTS = [(p, m) for p, m in MESSAGES if "certificate_check" in m]
CAPSULES = [(p, m) for p, m in MESSAGES if "data_cipher" in m]


def _ids(items):
    return [f"{p}: {m['name']}" for p, m in items]


@pytest.mark.parametrize("protocol, vector", SIGNED, ids=_ids(SIGNED))
def test_signature_covers_the_documented_bytes(protocol, vector):
    data = bytes.fromhex(vector["hex"])
    signed = bytes.fromhex(vector["signed_by"]["data"])
    public = bytes.fromhex(vector["signed_by"]["public"])
    if vector["schema"] in ("signaling.LoginResponse", "signaling.LoginReject"):
        # the AS signs the request nonce, then every byte before the signature
        nonce = bytes.fromhex(DOCS["authentication"]["inputs"]["request_nonce"])
        assert signed == nonce + data[:-64]
    else:
        assert signed == data[:-64]
    crypto.verify_signature(public, signed, data[-64:])
    with pytest.raises(AuthenticationError):
        crypto.verify_signature(public, signed[:-1] + bytes([signed[-1] ^ 1]), data[-64:])


@pytest.mark.parametrize("protocol, vector", SEALED, ids=_ids(SEALED))
def test_sealed_field_opens_to_its_plaintext_vector(protocol, vector):
    check = vector["sealed_with"]
    data = bytes.fromhex(vector["hex"])
    sealed = bytes.fromhex(vector["fields"][check["field"]])
    key, aad = bytes.fromhex(check["key"]), bytes.fromhex(check["aad"])
    assert crypto.open_sealed(key, sealed, aad) == raw(protocol, check["plaintext"])
    if vector["schema"] == "signaling.LoginResponse":
        assert aad == b""
    else:  # AAD = every byte before the sealed field, which runs to the end
        assert data.endswith(sealed) and aad == data[: len(data) - len(sealed)]
    with pytest.raises(AuthenticationError):
        crypto.open_sealed(key, sealed, aad + b"\0")


@pytest.mark.parametrize("protocol, vector", CERTS, ids=_ids(CERTS))
def test_certificate_vector_verifies(protocol, vector):
    check = vector["certificate_check"]
    body = crypto.verify_certificate(
        bytes.fromhex(vector["hex"]), bytes.fromhex(check["ca_public"]), check["now"], role=check["role"]
    )
    assert plain(body) == vector["fields"]["body"]["value"]


def test_ca_certificate_vector_is_a_trust_anchor():
    ca = raw("certificate", "CA certificate (self-signed)")
    assert crypto.ca_public_key(ca) == bytes.fromhex(DOCS["certificate"]["inputs"]["ca_sign_public"])


@pytest.mark.parametrize("protocol, vector", CAPSULES, ids=_ids(CAPSULES))
def test_capsule_vector_is_chacha20_poly1305_with_the_counter_nonce(protocol, vector):
    check = vector["data_cipher"]
    data = bytes.fromhex(vector["hex"])
    key, plaintext = bytes.fromhex(check["key"]), bytes.fromhex(check["plaintext"])
    header = data[: tunnel.CAPSULE_HEADER]
    assert bytes.fromhex(check["aad"]) == header
    assert bytes.fromhex(check["nonce"]) == b"\0\0\0\0" + vector["fields"]["counter"].to_bytes(8, "little")
    nonce = bytes.fromhex(check["nonce"])
    suite = check.get("suite", crypto.CHACHA20_POLY1305)
    decrypt = {
        crypto.CHACHA20_POLY1305: sodium.crypto_aead_chacha20poly1305_ietf_decrypt,
        crypto.AES256_GCM: sodium.crypto_aead_aes256gcm_decrypt,
    }[suite]
    assert decrypt(data[13:], header, nonce, key) == plaintext
    assert crypto.DataCipher(bytes(32), key, suite=suite).open(data, tunnel.CAPSULE_HEADER) == plaintext
    assert crypto.DataCipher(key, bytes(32), suite=suite).seal(header, plaintext) == data
    assert len(data) == len(plaintext) + tunnel.OVERHEAD
    if "plaintext_vector" in check:
        assert plaintext == raw(protocol, check["plaintext_vector"])


# --- derived keys ----------------------------------------------------------------------


def fixed_ephemeral(monkeypatch, secret: bytes) -> crypto.Ephemeral:
    """A crypto.Ephemeral whose secret is a vector's fixed one."""
    monkeypatch.setattr(nacl.public.PrivateKey, "generate", classmethod(lambda cls: cls(secret)))
    return crypto.Ephemeral()


def test_login_key_matches_the_vector(monkeypatch):
    doc = DOCS["authentication"]
    inputs, derived = doc["inputs"], doc["derived"]
    node = fixed_ephemeral(monkeypatch, bytes.fromhex(inputs["mn_login_ephemeral_secret"]))
    server = fixed_ephemeral(monkeypatch, bytes.fromhex(inputs["as_login_ephemeral_secret"]))
    request = message("authentication", "Login Request")["fields"]
    response = message("authentication", "Login Response")["fields"]
    assert node.public.hex() == request["ephemeral"]
    assert server.public.hex() == response["ephemeral"]
    shared = node.agree(server.public)
    assert shared == server.agree(node.public) == bytes.fromhex(derived["login_shared"])
    key = crypto.login_key(shared, bytes.fromhex(request["nonce"]))
    assert key.hex() == derived["login_key"]


def test_ticket_in_the_grant_is_the_sealed_ticket_vector():
    doc = DOCS["authentication"]
    grant = message("authentication", "Login Grant (plaintext)")["fields"]
    assert grant["ticket"] == doc["derived"]["sealed_ticket"]
    opened = crypto.open_sealed(bytes.fromhex(doc["inputs"]["as_nms_key"]), bytes.fromhex(grant["ticket"]))
    assert opened == raw("authentication", "Ticket (plaintext)")


def test_login_request_carries_the_node_certificate_vector():
    request = message("authentication", "Login Request")["fields"]
    response = message("authentication", "Login Response")["fields"]
    assert request["certificate"] == message("certificate", "Node certificate (mn)")["hex"]
    assert response["certificate"] == message("certificate", "Authority certificate (AS)")["hex"]


NMS_REQUESTS = [(p, m) for p, m in MESSAGES if m["schema"] == "signaling.NmsRequest"]


def test_there_are_nms_request_vectors():
    assert {p for p, _ in NMS_REQUESTS} >= {"registration", "route-selection"}


@pytest.mark.parametrize("protocol, vector", NMS_REQUESTS, ids=_ids(NMS_REQUESTS))
def test_nms_requests_carry_tickets_the_nms_can_open(protocol, vector):
    as_nms = bytes.fromhex(DOCS["authentication"]["inputs"]["as_nms_key"])
    ticket = parse(signaling.Ticket, crypto.open_sealed(as_nms, bytes.fromhex(vector["fields"]["ticket"])))
    assert bytes(ticket.session_key).hex() == vector["sealed_with"]["key"]


def test_ticket_expires_with_its_lifetime_or_certificate_and_names_its_serial():
    ticket = message("authentication", "Ticket (plaintext)")["fields"]
    cert = message("certificate", "Node certificate (mn)")["fields"]["body"]["value"]
    now = DOCS["authentication"]["now"]
    assert ticket["expires"] <= cert["not_after"] and ticket["expires"] > now
    assert ticket["serial"] == cert["serial"]
    assert ticket["issued"] == now * 1_000_000  # microseconds
    assert message("authentication", "Login Grant (plaintext)")["fields"]["expires"] == ticket["expires"]


def test_end_keys_match_the_vector(monkeypatch):
    doc = DOCS["tunnel"]
    inputs, derived = doc["inputs"], doc["derived"]
    initiator = fixed_ephemeral(monkeypatch, bytes.fromhex(inputs["initiator_ephemeral_secret"]))
    responder = fixed_ephemeral(monkeypatch, bytes.fromhex(inputs["responder_ephemeral_secret"]))
    assert initiator.public.hex() == message("tunnel", "Tunnel Hello (initiator, CN)")["fields"]["ephemeral"]
    assert responder.public.hex() == message("tunnel", "Tunnel Hello (responder, MN)")["fields"]["ephemeral"]
    offered = message("tunnel", "Tunnel Hello (initiator, CN)")["fields"]["suites"]
    chosen = message("tunnel", "Tunnel Hello (responder, MN)")["fields"]["suites"]
    transcript = inputs["path_id"].to_bytes(4, "big") + initiator.public + responder.public + bytes([offered, chosen])
    assert transcript.hex() == derived["transcript"]
    shared = initiator.agree(responder.public)
    assert shared.hex() == derived["shared"]
    mn_cn = bytes.fromhex(inputs["mn_cn_key"])
    i2r, r2i = bytes.fromhex(derived["end_key_i2r"]), bytes.fromhex(derived["end_key_r2i"])
    assert crypto.end_keys(shared, mn_cn, transcript, initiator=True) == (i2r, r2i)
    assert crypto.end_keys(responder.agree(initiator.public), mn_cn, transcript, initiator=False) == (r2i, i2r)


def test_tunnel_messages_use_the_indices_of_the_handshake():
    inputs = DOCS["tunnel"]["inputs"]
    request = message("tunnel", "Tunnel Request")["fields"]
    response = message("tunnel", "Tunnel Response")["fields"]
    assert request["sender_index"] == response["receiver_index"] == inputs["initiator_index"]
    assert response["sender_index"] == inputs["responder_index"]
    for vector in DOCS["tunnel"]["messages"]:
        if vector["schema"] == "tunnel.Capsule":
            to_responder = vector["fields"]["receiver_index"] == inputs["responder_index"]
            key = "end_key_i2r" if to_responder else "end_key_r2i"
            if vector["data_cipher"].get("suite") == crypto.AES256_GCM:
                key = "aes_" + key
            assert vector["data_cipher"]["key"] == DOCS["tunnel"]["derived"][key], vector["name"]


def test_capsule_header_is_little_endian_and_signaling_big_endian():
    capsule = raw("tunnel", "Keep Alive Ack (CN to MN, counter 1)")
    assert capsule[1:5] == DOCS["tunnel"]["inputs"]["responder_index"].to_bytes(4, "little")
    assert capsule[5:13] == (1).to_bytes(8, "little")
    request = raw("tunnel", "Tunnel Request")
    assert request[5:9] == DOCS["tunnel"]["inputs"]["initiator_index"].to_bytes(4, "big")
    login = raw("authentication", "Login Request")
    assert login[2:6] == (0x00C0FFEE).to_bytes(4, "big")


def test_capsule_overhead_and_mtu_are_as_documented():
    assert tunnel.CAPSULE_HEADER == 13 and tunnel.TAG == 16 and tunnel.OVERHEAD == 29
    assert 1500 - 40 - 8 - tunnel.OVERHEAD == 1423
    readme = (PROTOCOLS / "README.md").read_text()
    assert "1423" in readme and "1401" in readme and "inner MTU 1400" in readme


# --- relay: the TRS's keys, its answer and both kinds of frame ---------------------------


def relay_input(name: str) -> bytes:
    return bytes.fromhex(DOCS["relay"]["inputs"][name])


def relay_link(responder: bool, sequence: int = 0) -> RelayLink:
    """A node's end of the vectors' relay session."""
    return RelayLink(DOCS["relay"]["inputs"]["session_id"], relay_input("tunnel_key"), responder, sequence)


def test_relay_subkeys_derive_from_the_tunnel_key_the_relay_request_carries():
    derived = DOCS["relay"]["derived"]
    body = parse(relay.RelayRequestBody, raw("relay", "Relay Request Body"))
    assert bytes(body.tunnel_key) == relay_input("tunnel_key")
    assert body.session_id == DOCS["relay"]["inputs"]["session_id"]
    seal_key, mac_key = bytes.fromhex(derived["relay_seal_key"]), bytes.fromhex(derived["relay_mac_key"])
    assert crypto.relay_keys(bytes(body.tunnel_key)) == (seal_key, mac_key)
    link = relay_link(responder=False)
    assert (link.seal_key, link.mac_key) == (seal_key, mac_key)


def test_the_trs_answers_the_relay_request_with_the_relay_response():
    doc, nms = DOCS["relay"], ("192.0.2.1", 7001)
    nms_trs = relay_input("nms_trs_key")
    expected = parse(relay.RelayResponseBody, raw("relay", "Relay Response Body"))
    trs = RelayService(nms_trs, [locator_text(loc) for loc in expected.locators])
    [(reply, dest)] = trs.receive(raw("relay", "Relay Request"), nms, doc["now"])
    assert dest == nms
    response = raw("relay", "Relay Response")
    header = relay.RelayResponse.build(dict(header=parse(relay.RelayResponse, response).header, sealed=b""))
    assert reply.startswith(header) and response.startswith(header)  # type 0x41 and the request's txid
    assert crypto.open_sealed(nms_trs, reply[len(header):], header) == raw("relay", "Relay Response Body")
    request = parse(relay.RelayRequestBody, raw("relay", "Relay Request Body"))
    session = trs.sessions[request.session_id]
    assert crypto.relay_keys(bytes(request.tunnel_key)) == (session.seal_key, session.mac_key)
    assert session.lifetime == request.lifetime
    # the sealed frame opens at the TRS and makes its source the initiator's endpoint
    initiator = ("198.51.100.20", 40000)
    assert trs.receive(raw("relay", "Relayed, sealed (Tunnel Request, from the initiator)"), initiator, doc["now"]) == []
    inner = parse(relay.SealedInner, raw("relay", "Sealed Inner (Tunnel Request)"))
    assert (session.sides[0].endpoint, session.sides[0].sequence) == (initiator, inner.sequence)


def test_sealed_relayed_frame_opens_to_the_sequence_and_the_datagram():
    frame = raw("relay", "Relayed, sealed (Tunnel Request, from the initiator)")
    inner = parse(relay.SealedInner, raw("relay", "Sealed Inner (Tunnel Request)"))
    assert frame[5] == relay.SEALED  # from the initiator
    assert relay_link(responder=True).unwrap(frame) == bytes(inner.datagram)
    assert bytes(inner.datagram) == raw("relay", "Tunnel Request (relayed, hello under the Temp Key)")
    # a link wraps the same datagram the same way (only the seal nonce is random)
    initiator = relay_link(responder=False, sequence=inner.sequence - 1)
    ours = initiator.wrap(bytes(inner.datagram), sealed=True)
    header = ours[: relay.RELAYED_HEADER]
    assert header == frame[: relay.RELAYED_HEADER]
    seal_key = bytes.fromhex(DOCS["relay"]["derived"]["relay_seal_key"])
    assert crypto.open_sealed(seal_key, ours[len(header):], header) == raw("relay", "Sealed Inner (Tunnel Request)")
    with pytest.raises(AuthenticationError):  # a frame from its own side
        initiator.unwrap(frame)


def test_the_hello_in_a_relayed_tunnel_request_opens_only_under_the_temp_key():
    data = raw("relay", "Tunnel Request (relayed, hello under the Temp Key)")
    sealed = bytes(parse(tunnel.TunnelRequest, data).sealed)
    aad = data[: len(data) - len(sealed)]
    derived = DOCS["relay"]["derived"]
    trs_keys = [relay_input("tunnel_key"), relay_input("nms_trs_key")]
    trs_keys += [bytes.fromhex(derived[k]) for k in ("relay_seal_key", "relay_mac_key")]
    for key in trs_keys:
        with pytest.raises(AuthenticationError):
            crypto.open_sealed(key, sealed, aad)
    hello = raw("relay", "Tunnel Hello (initiator, MN, relayed)")
    assert crypto.open_sealed(relay_input("temp_key"), sealed, aad) == hello


RELAY_MACS = [(p, m) for p, m in MESSAGES if "relay_mac" in m]


def test_there_are_relay_data_frame_vectors():
    assert RELAY_MACS


@pytest.mark.parametrize("protocol, vector", RELAY_MACS, ids=_ids(RELAY_MACS))
def test_data_frame_is_the_datagram_and_a_16_byte_keyed_blake2b_mac(protocol, vector):
    check = vector["relay_mac"]
    frame = bytes.fromhex(vector["hex"])
    key, datagram = bytes.fromhex(check["key"]), bytes.fromhex(check["datagram"])
    assert key.hex() == DOCS["relay"]["derived"]["relay_mac_key"]
    assert frame == bytes.fromhex(check["data"]) + bytes.fromhex(check["tag"])
    assert len(frame) == relay.RELAYED_HEADER + len(datagram) + relay.RELAY_TAG == len(datagram) + 22
    assert crypto.relay_mac(key, frame[: -relay.RELAY_TAG]) == frame[-relay.RELAY_TAG :]
    assert crypto.relay_mac_input(frame[: -relay.RELAY_TAG]) == bytes.fromhex(check["mac_input"])
    if "datagram_vector" in check:
        assert datagram == raw(check["datagram_vector"]["protocol"], check["datagram_vector"]["name"])
    from_responder = bool(frame[5] & relay.FROM_RESPONDER)
    assert relay_link(responder=from_responder).wrap(datagram) == frame  # the MAC is deterministic
    receiver = relay_link(responder=not from_responder)
    assert receiver.unwrap(frame) == datagram
    # the MAC covers the head, the capsule header, the AEAD tag and the
    # MAC itself; the body between them is the AEAD's to check, at the peer
    body = range(relay.RELAYED_HEADER + tunnel.CAPSULE_HEADER, len(frame) - 2 * relay.RELAY_TAG)
    for position in range(len(frame)):
        mutated = bytearray(frame)
        mutated[position] ^= 1
        if position not in body:
            with pytest.raises(AuthenticationError):
                receiver.unwrap(bytes(mutated))
            continue
        inner = receiver.unwrap(bytes(mutated))
        key = bytes.fromhex(DOCS["tunnel"]["derived"]["end_key_r2i"])
        with pytest.raises(AuthenticationError):
            crypto.DataCipher(bytes(32), key).open(inner, tunnel.CAPSULE_HEADER)


# --- the documents and the generator --------------------------------------------------


def hex_blocks(markdown: str) -> set[str]:
    return {re.sub(r"\s", "", b) for b in re.findall(r"```hex\n(.*?)```", markdown, re.S)}


@pytest.mark.parametrize("protocol", DOCUMENTS)
def test_document_quotes_every_vector(protocol):
    assert protocol in DOCS, f"protocols/vectors/{protocol}.json is missing"
    blocks = hex_blocks((PROTOCOLS / f"{protocol}.md").read_text())
    missing = [m["name"] for m in DOCS[protocol]["messages"] if m["hex"] not in blocks]
    assert not missing


def test_generator_output_is_committed():
    """Vectors and documents are what generate.py writes today: a schema
    change that alters the bytes must come with regenerated vectors."""
    spec = importlib.util.spec_from_file_location("generate_vectors", VECTORS / "generate.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    stale = [str(path.relative_to(ROOT)) for path, text in generator.outputs().items() if path.read_text() != text]
    assert not stale, "run protocols/vectors/generate.py"
